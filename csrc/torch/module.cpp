// The Python module fusedopt._C: importing it runs the static TORCH_LIBRARY registrars of the other
// glue units. It defines nothing else and uses only CPython's limited API, so one build (abi3) loads
// in every Python 3.9+; what Python needs to know of the build comes from ops (info.cpp).
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x03090000
#endif
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C",
                            "fusedopt compiled extension (ops are registered with the torch dispatcher on import)",
                            -1, nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&def);
}
