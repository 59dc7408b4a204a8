#!/usr/bin/env bash
# A hash of everything the extension is built from (csrc/, setup.py, CMakeLists.txt, tools/build_times.py):
# a prebuilt extension (.gpu/, tools/gpu_prebuild.sh) is used only where this hash matches.
cd "$(dirname "$0")/.."
find csrc setup.py CMakeLists.txt tools/build_times.py -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16
