//! Putting trained models to work: reconstruction, interpolation, manifolds,
//! latent plots, compression, denoising, anomaly detection and evaluation.
