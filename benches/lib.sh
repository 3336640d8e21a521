# Shared by the benchmark scripts (sourced, not run).

# ensure_tools CMD[:DEBIAN_PACKAGE]...: installs with apt-get whatever is missing.
ensure_tools() {
  local missing=() spec
  for spec in "$@"; do
    command -v "${spec%%:*}" >/dev/null || missing+=("${spec#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get install -y -qq "${missing[@]}" || { $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq "${missing[@]}"; }
}

# write_section FILE: replaces the section of FILE whose heading is the first line of stdin
# (up to the next `## ` heading), or appends it; prints the section.
write_section() {
  python3 -c '
import re, sys
path, section = sys.argv[1], sys.stdin.read().rstrip() + "\n"
heading = section.splitlines()[0]
try:
    doc = open(path).read()
except FileNotFoundError:
    doc = "# Performance\n\nEvery number here comes from a committed benchmark that anyone can run.\n"
pattern = re.escape(heading) + r"\n.*?(?=\n## |\Z)"
if re.search(pattern, doc, flags=re.S):
    doc = re.sub(pattern, lambda _: section.rstrip(), doc, count=1, flags=re.S)
else:
    doc = doc.rstrip() + "\n\n" + section
open(path, "w").write(doc.rstrip() + "\n")
print(section, end="")
' "$1"
}
