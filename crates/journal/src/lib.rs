//! holdfast's log journal (work in progress).
#![deny(unsafe_code)]
