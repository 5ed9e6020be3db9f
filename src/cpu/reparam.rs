//! The reparameterization trick: z = mu + exp(logvar / 2) · eps.
//!
//! The encoder head writes mulv (B, 2L): mu in columns 0..L, logvar in L..2L.

/// z (B,L) from mulv (B,2L) and eps (B,L).
pub fn reparameterize_forward(z: &mut [f32], mulv: &[f32], eps: &[f32], latent: usize) {
    for ((z, mulv), eps) in z.chunks_exact_mut(latent).zip(mulv.chunks_exact(2 * latent)).zip(eps.chunks_exact(latent))
    {
        let (mu, logvar) = mulv.split_at(latent);
        for j in 0..latent {
            z[j] = crate::ops::reparameterize(mu[j], logvar[j], eps[j]);
        }
    }
}

/// dmulv (B,2L) += the gradient of z with respect to mu and logvar, given dz (B,L).
pub fn reparameterize_backward(dmulv: &mut [f32], dz: &[f32], mulv: &[f32], eps: &[f32], latent: usize) {
    let rows = dmulv.chunks_exact_mut(2 * latent).zip(dz.chunks_exact(latent));
    for ((dmulv, dz), (mulv, eps)) in rows.zip(mulv.chunks_exact(2 * latent).zip(eps.chunks_exact(latent))) {
        let (dmu, dlogvar) = dmulv.split_at_mut(latent);
        for j in 0..latent {
            let (g_mu, g_lv) = crate::ops::d_reparameterize(dz[j], mulv[latent + j], eps[j]);
            dmu[j] += g_mu;
            dlogvar[j] += g_lv;
        }
    }
}
