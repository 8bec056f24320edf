"""The lab: one experiment per claim of CLAIMS.md (module cNN_*.py for claim CNN), the
namespace sandbox they run in, the runner and the HTML report."""
