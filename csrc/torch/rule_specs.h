// The parsed form of a rule's kStates string (core/rule_facts.h), shared by the op glue (ops.cpp:
// schemas, checks, 8-bit signs) and the export (info.cpp: rule_specs()). Parsed at registration,
// never per call.
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

namespace fusedopt {

struct StateDecl {
  std::string name;
  bool scalar = false;     // '@': a per-tensor scalar state (core/aux.h)
  bool is_signed = true;   // element states: '+' marks a non-negative one (unsigned 8-bit map)
  bool from_param = false; // '=param': starts as a copy of the param
  double init = 0.0;       // '=v': the initial value (element states: default 0)
};

inline std::vector<StateDecl> parse_states(const char* s) {
  std::vector<StateDecl> out;
  std::string cur;
  for (const char* c = s;; ++c) {
    if (*c == ',' || *c == 0) {
      const size_t b = cur.find_first_not_of(' '), e = cur.find_last_not_of(' ');
      if (b != std::string::npos) {
        std::string n = cur.substr(b, e - b + 1);
        StateDecl d;
        if (n[0] == '@') {
          d.scalar = true;
          n = n.substr(1);
        } else if (n[0] == '+') {
          d.is_signed = false;
          n = n.substr(1);
        }
        const size_t eq = n.find('=');
        if (eq != std::string::npos) {
          const std::string v = n.substr(eq + 1);
          n = n.substr(0, eq);
          if (v == "param" && !d.scalar)
            d.from_param = true;
          else
            d.init = std::stod(v);
        }
        if (!out.empty() && out.back().scalar && !d.scalar)
          throw std::logic_error(std::string("fusedopt: kStates \"") + s + "\" lists an element state after a '@' one");
        d.name = n;
        out.push_back(d);
      }
      cur.clear();
      if (*c == 0) break;
    } else {
      cur += *c;
    }
  }
  return out;
}

}  // namespace fusedopt
