//! The lab's pod sandbox: a process that does nothing until it is killed. Every pod's network
//! namespace is held by one of these (the kubelet's sandbox image, `registry.k8s.io/pause`,
//! built here because no registry is reachable).
//!
//! Standard library only, so `ferrolb-lab` compiles it into a static binary with `rustc`
//! alone (see `crate::image`). containerd stops a sandbox with SIGKILL, so no signal handling
//! is needed; a pod's containers have PID namespaces of their own, so there are no orphans to
//! reap.

/// Parks forever.
pub fn main() {
    loop {
        std::thread::park();
    }
}
