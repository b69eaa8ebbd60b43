//! The guest platform per architecture: memory layout, boot protocol and vCPU set-up.
//! `arch::x86_64`, `arch::s390x` and `arch::ppc64le` share one interface, re-exported
//! here for the current target so generic code never names an architecture.
