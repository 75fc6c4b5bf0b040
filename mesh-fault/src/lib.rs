//! Istio HTTP fault injection (delay, abort) as a Tower layer (arrives with issue 3).
