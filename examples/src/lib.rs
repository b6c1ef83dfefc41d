//! Runnable examples of quicproquo; each lives in `examples/examples/` and says at its top what
//! it shows and how to run it.
