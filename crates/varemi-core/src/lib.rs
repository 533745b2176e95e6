//! `varemi-core`: the array kernels of varemi, pure Rust on slices.
//!
//! This crate knows nothing of Python: no pyo3, no numpy. Each kernel takes slices and
//! plain values and returns owned values, or an error enum of its module whose
//! `Display` is the message the user sees. The bindings crate (`crates/varemi-python`,
//! built by maturin as `varemi._native`) borrows numpy arrays as slices, releases the
//! GIL around these calls, and maps each error enum to its Python exception class, in
//! one place (its `errors` module).
//!
//! The kernels: [`pitch`] (pitch normalisation), [`window`] (windowing with stride and
//! conditioning-token prepending), [`split`] (split hashing), [`remi`] (MidiTok's REMI
//! base-token encoding), [`bpe`] (MidiTok's BPE step on ids), [`duplicates`] (note
//! fingerprints and MinHash) and [`labels`] (the label features). Each module says what
//! its Python specification is: a pure-Python twin (`varemi.core.reference` and others) or
//! MidiTok itself.

pub mod bpe;
pub mod duplicates;
pub mod labels;
pub mod pitch;
pub mod remi;
pub mod split;
pub mod window;
