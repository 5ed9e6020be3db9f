//! Batches made on a background thread, a few ahead of training, so the
//! training loop never waits on gathering pixels or drawing input noise.

use std::sync::Arc;

use super::Images;
use crate::rng::{self, Stream};

/// Batches queued ahead of the consumer.
const QUEUE: usize = 4;

/// One batch, row-major: row `r` is image `plan.order[index * batch_size + r]`.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Batch number within the epoch.
    pub index: usize,
    /// Images in this batch; the last batch of an epoch may be short.
    pub rows: usize,
    /// `rows x dim` pixels scaled to [0, 1].
    pub clean: Vec<f32>,
    /// The noisy input for denoising training, `rows x dim`; `None` when `noise_std` is 0.
    pub input: Option<Vec<f32>>,
    /// The images' labels one-hot, `rows x classes`, for a conditional model.
    pub labels: Option<Vec<f32>>,
}

/// One epoch's batches.
#[derive(Clone, Debug)]
pub struct BatchPlan {
    /// Image indices in training order.
    pub order: Vec<u32>,
    pub batch_size: usize,
    /// Std of the Gaussian input noise; 0 for none.
    pub noise_std: f32,
    pub seed: u32,
    /// Global step of batch 0; batch `b` draws its noise at step `first_step + b`.
    pub first_step: u64,
    /// A conditional model's classes: batches carry their labels one-hot (0: none).
    pub classes: usize,
}

/// Starts a thread that sends the plan's batches in order. It stops early,
/// quietly, when the receiver is dropped.
///
/// Panics if `batch_size` is 0 or `order` names an image that does not exist,
/// here rather than in the thread, where the panic would look like a short epoch.
pub fn spawn_batches(images: Arc<Images>, plan: BatchPlan) -> flume::Receiver<Batch> {
    assert!(plan.batch_size > 0, "batch size must be at least 1");
    if let Some(&bad) = plan.order.iter().find(|&&i| i as usize >= images.count) {
        panic!("batch plan names image {bad}, but there are {} images", images.count);
    }
    assert!(plan.classes == 0 || images.labels.is_some(), "a conditional model's batches need labelled images");
    let (tx, rx) = flume::bounded(QUEUE);
    std::thread::Builder::new()
        .name("batches".into())
        .spawn(move || {
            let dim = images.dim();
            for (index, indices) in plan.order.chunks(plan.batch_size).enumerate() {
                let mut clean = vec![0.0; indices.len() * dim];
                gather_batch(&images, indices, &mut clean);
                let input = (plan.noise_std > 0.0).then(|| {
                    let mut noisy = vec![0.0; clean.len()];
                    let step = (plan.first_step + index as u64) as u32;
                    add_input_noise(&clean, &mut noisy, plan.noise_std, plan.seed, Stream::InputNoise, step);
                    noisy
                });
                let labels = (plan.classes > 0).then(|| one_hot(&images, indices, plan.classes));
                let batch = Batch { index, rows: indices.len(), clean, input, labels };
                if tx.send(batch).is_err() {
                    return; // The receiver is gone: training stopped.
                }
            }
        })
        .expect("cannot start the batch thread");
    rx
}

/// The labels of the images at `indices`, one-hot over `classes` (B, classes).
pub fn one_hot(images: &Images, indices: &[u32], classes: usize) -> Vec<f32> {
    let labels = images.labels.as_ref().expect("labelled images");
    let mut out = vec![0.0; indices.len() * classes];
    for (row, &i) in out.chunks_exact_mut(classes).zip(indices) {
        row[labels[i as usize] as usize] = 1.0;
    }
    out
}

/// Copies the images at `indices` into `out` (`indices.len() x dim`) as `x / 255`.
pub fn gather_batch(images: &Images, indices: &[u32], out: &mut [f32]) {
    let dim = images.dim();
    assert_eq!(out.len(), indices.len() * dim, "batch buffer size");
    // Wide vectors: this runs beside the step's threads on the loader thread.
    crate::fastmath::widest(
        #[inline(always)]
        || {
            for (row, &i) in out.chunks_exact_mut(dim).zip(indices) {
                for (o, &p) in row.iter_mut().zip(images.image(i as usize)) {
                    *o = p as f32 / 255.0;
                }
            }
        },
    )
}

/// `noisy = clamp(clean + std * N(0, 1), 0, 1)`, one normal per element drawn at
/// counter `(seed, stream, step, i)`; the GPU kernel draws the same numbers.
/// Training uses `Stream::InputNoise`, evaluation its own stream.
pub fn add_input_noise(clean: &[f32], noisy: &mut [f32], std: f32, seed: u32, stream: Stream, step: u32) {
    assert_eq!(clean.len(), noisy.len(), "noise buffer size");
    for (i, (n, &c)) in noisy.iter_mut().zip(clean).enumerate() {
        *n = crate::ops::input_noise(c, std, rng::normal(seed, stream, step, i as u32));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_scales_by_255() {
        let images = Images {
            pixels: vec![0, 255, 51, 1, 2, 3],
            count: 3,
            channels: 1,
            rows: 1,
            cols: 2,
            labels: None,
            class_names: None,
        };
        let mut out = [9.0; 4];
        gather_batch(&images, &[1, 0], &mut out);
        assert_eq!(out, [51.0 / 255.0, 1.0 / 255.0, 0.0, 1.0]);
    }

    #[test]
    fn noise_matches_the_formula() {
        let clean = [0.0, 0.5, 1.0, 0.25];
        let mut noisy = [0.0; 4];
        add_input_noise(&clean, &mut noisy, 0.3, 11, Stream::InputNoise, 7);
        for i in 0..4 {
            let want = (clean[i] + 0.3 * rng::normal(11, Stream::InputNoise, 7, i as u32)).clamp(0.0, 1.0);
            assert_eq!(noisy[i].to_bits(), want.to_bits());
        }
    }
}
