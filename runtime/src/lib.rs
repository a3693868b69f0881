//! What ferrolb's binaries share at run time: logging setup, the Kubernetes client, a small
//! Prometheus registry, the probe endpoint and the event recorder. (Being moved here from
//! `ferrolb-crds`.)
