//! Test harness for holdfast's end-to-end tests: a private containerd per
//! suite, a busybox rootfs, `ctr` helpers and leak checks.
