//! Istio's Bookinfo sample, rewritten in Rust from its behavioural specification: the four
//! services (productpage, details, reviews v1/v2/v3, ratings) as libraries, and `bookinfo
//! up`, which runs the whole mesh on one machine.

pub mod dashboard;
pub mod details;
pub mod http;
pub mod productpage;
pub mod ratings;
pub mod reviews;
pub mod traces;
pub mod up;
