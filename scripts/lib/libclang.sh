# Sourced by setup.sh and by tests/setup_scripts.rs: decides whether bindgen can load libclang.
#
# bindgen (through clang-sys) loads `libclang.so`, `libclang.so.N` or `libclang-N.so[.M]` from
# LIBCLANG_PATH or the usual library directories. LLVM also ships `libclang-cpp.so.N`, a
# different library bindgen never loads: a glob like `libclang*.so*` matches it and once let a
# machine without libclang-dev skip the install, so names with `-cpp` never count here.

# libclang_loadable ROOT: exit 0 when a library bindgen would load exists under ROOT
# ("/" for this machine), 1 otherwise. LIBCLANG_PATH, when set, is searched first.
libclang_loadable() {
  local root="${1%/}" dir file name
  local dirs=()
  if [ -n "${LIBCLANG_PATH:-}" ] && [ -f "$root$LIBCLANG_PATH" ]; then
    # clang-sys also takes the library file itself.
    name="${LIBCLANG_PATH##*/}"
    case "$name" in
      *-cpp*) ;;
      libclang.so | libclang.so.* | libclang-*.so | libclang-*.so.*) return 0 ;;
    esac
  elif [ -n "${LIBCLANG_PATH:-}" ]; then
    dirs+=("$root$LIBCLANG_PATH")
  fi
  dirs+=("$root"/usr/lib "$root"/usr/lib64 "$root"/usr/local/lib "$root"/usr/lib/*-linux-gnu
         "$root"/usr/lib/llvm-*/lib "$root"/usr/local/llvm/lib)
  for dir in "${dirs[@]}"; do
    [ -d "$dir" ] || continue
    for file in "$dir"/libclang.so "$dir"/libclang.so.* "$dir"/libclang-*.so "$dir"/libclang-*.so.*; do
      [ -e "$file" ] || continue
      name="${file##*/}"
      case "$name" in *-cpp*) continue ;; esac
      return 0
    done
  done
  return 1
}

# libclang_missing: exit 0 when this machine must install libclang-dev. A LIBCLANG_PATH that
# holds a loadable library is the user's choice and is trusted. Otherwise, where dpkg exists,
# its word is final: libclang-dev (or a versioned libclang-N-dev) also brings clang's builtin
# headers (stddef.h), which a bare libclang1 runtime lacks and bindgen needs just as much.
libclang_missing() {
  if [ -n "${LIBCLANG_PATH:-}" ] && libclang_loadable /; then
    return 1
  fi
  if command -v dpkg-query >/dev/null 2>&1; then
    # dpkg-query exits non-zero when one of the names is unknown: read its output, not its code.
    local installed
    installed="$(dpkg-query -W -f='${Package} ${Status}\n' 'libclang-dev' 'libclang-*-dev' 2>/dev/null || true)"
    ! grep -qE '^libclang(-[0-9.]+)?-dev install ok installed$' <<<"$installed"
  else
    ! libclang_loadable /
  fi
}
