//! `anomaly`: per-image anomaly scores, a threshold, and how well they
//! separate the normal class from the others (ROC-AUC, precision, recall).

use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::eval::elbo_terms;
use super::{Draws, Inference, Split, first_pixels, per_image_mse, require_vae, split_images, wrote};
use crate::data::{DataSet, Images};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::model::{Architecture, ModelKind};
use crate::plot::{Chart, GRAY, Mark, PALETTE, Series, write_chart};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Score {
    /// Negative ELBO in nats (VAE), one posterior draw, as the test loss.
    Elbo,
    /// Mean squared error per pixel of the deterministic reconstruction.
    Recon,
}

impl std::fmt::Display for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Score::Elbo => "negative ELBO (nats)",
            Score::Recon => "reconstruction MSE per pixel",
        })
    }
}

impl Score {
    /// The score asked for, or the model's default: the negative ELBO for a
    /// VAE, the reconstruction error for an AE (which has no ELBO).
    pub fn resolve(asked: Option<Score>, arch: &Architecture) -> Result<Score> {
        match asked {
            Some(Score::Elbo) => require_vae(arch, "--score elbo").map(|()| Score::Elbo),
            Some(score) => Ok(score),
            None if arch.config.kind == ModelKind::Vae => Ok(Score::Elbo),
            None => Ok(Score::Recon),
        }
    }
}

/// Where the threshold comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ThresholdRule {
    /// This value.
    Given(f64),
    /// `k` standard deviations above the mean score of the normal training
    /// images: those of the normal class when there are labels and a class,
    /// else all of them ([`normal_training_images`]).
    AboveNormal { k: f64 },
}

impl ThresholdRule {
    pub fn check(&self) -> Result<()> {
        match *self {
            ThresholdRule::Given(t) if !t.is_finite() => {
                Err(Error::invalid("--threshold", format!("{t} is not a finite number")))
            }
            ThresholdRule::AboveNormal { k } if !k.is_finite() => {
                Err(Error::invalid("--k", format!("{k} is not a finite number")))
            }
            _ => Ok(()),
        }
    }
}

/// The training images the default threshold is fitted to, and how to name
/// them: the normal class's when the data has labels ("class-K"), else all
/// of them ("all").
pub fn normal_training_images(train: &Images, normal_class: Option<u8>) -> Result<(Images, String)> {
    match normal_class {
        Some(class) if train.labels.is_some() => {
            let normal = train.with_label(class);
            if normal.count == 0 {
                return Err(Error::invalid("--normal-class", format!("no training images have label {class}")));
            }
            Ok((normal, format!("class-{class}")))
        }
        _ if train.count == 0 => Err(Error::unsupported(
            "the default threshold",
            "training images to fit it to; the training split is empty",
        )),
        _ => Ok((train.clone(), "all".to_string())),
    }
}

/// Which images are anomalies: those not of the normal class. `None` without
/// labels or a normal class.
pub fn truth(labels: Option<&[u8]>, normal_class: Option<u8>) -> Option<Vec<bool>> {
    match (labels, normal_class) {
        (Some(labels), Some(normal)) => Some(labels.iter().map(|&l| l != normal).collect()),
        _ => None,
    }
}

pub struct AnomalyOptions {
    pub split: Split,
    /// [default: [`Score::resolve`]].
    pub score: Option<Score>,
    pub threshold: ThresholdRule,
    /// Every other label is an anomaly.
    pub normal_class: Option<u8>,
    /// The ROC curve (PNG); needs labels and a normal class.
    pub roc: Option<PathBuf>,
    /// Per-image scores.
    pub csv: Option<PathBuf>,
}

/// How the scores separate the normal class from the others.
pub struct Separation {
    pub normal_class: u8,
    /// `None` when the split holds one kind of image only.
    pub auc: Option<f64>,
    pub confusion: Confusion,
}

pub struct AnomalyReport {
    pub split: Split,
    pub score: Score,
    pub threshold: f64,
    /// How the threshold was chosen, for the user.
    pub origin: String,
    /// One per image of the split.
    pub scores: Vec<f64>,
    pub flagged: usize,
    /// With labels and a normal class.
    pub separation: Option<Separation>,
    pub roc: Option<PathBuf>,
    pub csv: Option<PathBuf>,
}

/// Scores every image of a split, flags those above the threshold, and
/// measures the separation when labels and a normal class say which are anomalies.
pub fn run(model: &mut dyn Inference, data: &DataSet, o: &AnomalyOptions, draws: Draws) -> Result<AnomalyReport> {
    o.threshold.check()?;
    draws.check()?;
    let score = Score::resolve(o.score, model.arch())?;
    let images = split_images(model.arch(), data, o.split)?;
    let truth = truth(images.labels.as_deref(), o.normal_class);
    if o.roc.is_some() && truth.is_none() {
        return Err(Error::unsupported(
            "--roc",
            "labels and a normal class (train --normal-class K, or --normal-class K)",
        ));
    }
    let (threshold, origin) = match o.threshold {
        ThresholdRule::Given(t) => (t, "given".to_string()),
        ThresholdRule::AboveNormal { k } => {
            let (normal, which) = normal_training_images(&data.train, o.normal_class)?;
            let (x, rows) = first_pixels(&normal, None);
            let labels = super::first_labels(model, &normal, rows)?;
            let s = scores(model, &x, labels.as_deref(), rows, score, draws.batch_size, draws.seed)?;
            (threshold(&s, k), format!("mean + {k}·std of {rows} {which} training scores"))
        }
    };
    let (x, rows) = first_pixels(images, None);
    let labels = super::first_labels(model, images, rows)?;
    let scores = scores(model, &x, labels.as_deref(), rows, score, draws.batch_size, draws.seed)?;
    let flagged = scores.iter().filter(|&&s| s > threshold).count();
    let separation = match (&truth, o.normal_class) {
        (Some(truth), Some(normal_class)) => {
            let auc = roc_auc(&scores, truth);
            if let Some(path) = &o.roc {
                let title = format!("Anomaly ROC, normal class {normal_class}, score: {score}");
                write_roc(path, &roc_curve(&scores, truth), auc.unwrap_or(f64::NAN), &title)?;
            }
            Some(Separation { normal_class, auc, confusion: Confusion::at(&scores, truth, threshold) })
        }
        _ => None,
    };
    if let Some(path) = &o.csv {
        write_csv(path, &scores, images.labels.as_deref(), threshold)?;
    }
    Ok(AnomalyReport {
        split: o.split,
        score,
        threshold,
        origin,
        scores,
        flagged,
        separation,
        roc: o.roc.clone(),
        csv: o.csv.clone(),
    })
}

impl std::fmt::Display for AnomalyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "score: {}; threshold {:.6} ({})", self.score, self.threshold, self.origin)?;
        writeln!(f, "{} of {} {} images flagged", self.flagged, self.scores.len(), self.split)?;
        match &self.separation {
            Some(Separation { normal_class, auc, confusion: c }) => {
                match auc {
                    Some(auc) => writeln!(f, "normal class {normal_class}: ROC-AUC {auc:.4}")?,
                    None => writeln!(
                        f,
                        "normal class {normal_class}: ROC-AUC undefined (only one kind of image in the split)"
                    )?,
                }
                writeln!(
                    f,
                    "at the threshold: precision {:.4}, recall {:.4} (tp {}, fp {}, tn {}, fn {})",
                    c.precision(),
                    c.recall(),
                    c.true_pos,
                    c.false_pos,
                    c.true_neg,
                    c.false_neg
                )?;
                if let Some(path) = &self.roc {
                    wrote(f, path)?;
                }
            }
            None => writeln!(
                f,
                "no ROC-AUC: it needs labels and a normal class (train --normal-class K, or --normal-class K)"
            )?,
        }
        if let Some(path) = &self.csv {
            wrote(f, path)?;
        }
        Ok(())
    }
}

/// One score per image of x (N, D); larger means more anomalous. The ELBO
/// draws follow `eval::elbo_terms` with `batch_size` and `seed`.
pub fn scores(
    model: &mut dyn Inference,
    x: &[f32],
    labels: Option<&[u8]>,
    rows: usize,
    score: Score,
    batch_size: usize,
    seed: u32,
) -> Result<Vec<f64>> {
    match score {
        Score::Elbo => {
            super::require_vae(model.arch(), "--score elbo")?;
            Ok(elbo_terms(model, x, labels, rows, batch_size, seed)?.iter().map(|t| t.recon + t.kl).collect())
        }
        Score::Recon => {
            let y = super::reconstruct(model, x, labels, rows)?;
            Ok(per_image_mse(x, &y, x.len() / rows))
        }
    }
}

/// Area under the ROC curve: the probability that a random anomaly scores
/// above a random normal image, ties counting one half (the Mann-Whitney U
/// statistic from average ranks). `None` unless both kinds are present.
pub fn roc_auc(scores: &[f64], anomalous: &[bool]) -> Option<f64> {
    let positives = anomalous.iter().filter(|&&a| a).count();
    let negatives = anomalous.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let average = (i + j + 2) as f64 / 2.0;
        rank_sum += order[i..=j].iter().filter(|&&k| anomalous[k]).count() as f64 * average;
        i = j + 1;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// The ROC curve (false positive rate, true positive rate) as the threshold
/// falls through the distinct scores, from (0, 0) to (1, 1).
pub fn roc_curve(scores: &[f64], anomalous: &[bool]) -> Vec<(f64, f64)> {
    let positives = anomalous.iter().filter(|&&a| a).count().max(1) as f64;
    let negatives = anomalous.iter().filter(|&&a| !a).count().max(1) as f64;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut curve = vec![(0.0, 0.0)];
    for (n, &k) in order.iter().enumerate() {
        if anomalous[k] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        // Tied scores are one threshold: one point after the last of them.
        if order.get(n + 1).is_none_or(|&next| scores[next] != scores[k]) {
            curve.push((fp / negatives, tp / positives));
        }
    }
    curve
}

/// Counts at a threshold: an image is flagged when its score is above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confusion {
    pub true_pos: usize,
    pub false_pos: usize,
    pub true_neg: usize,
    pub false_neg: usize,
}

impl Confusion {
    pub fn at(scores: &[f64], anomalous: &[bool], threshold: f64) -> Confusion {
        let mut c = Confusion { true_pos: 0, false_pos: 0, true_neg: 0, false_neg: 0 };
        for (&s, &a) in scores.iter().zip(anomalous) {
            match (s > threshold, a) {
                (true, true) => c.true_pos += 1,
                (true, false) => c.false_pos += 1,
                (false, false) => c.true_neg += 1,
                (false, true) => c.false_neg += 1,
            }
        }
        c
    }

    /// Share of flagged images that are anomalies (NaN when none is flagged).
    pub fn precision(&self) -> f64 {
        self.true_pos as f64 / (self.true_pos + self.false_pos) as f64
    }

    /// Share of anomalies that are flagged.
    pub fn recall(&self) -> f64 {
        self.true_pos as f64 / (self.true_pos + self.false_neg) as f64
    }
}

/// The threshold at `k` standard deviations above the mean of normal scores.
pub fn threshold(normal_scores: &[f64], k: f64) -> f64 {
    super::mean(normal_scores) + k * super::std_dev(normal_scores)
}

pub fn write_roc(path: &Path, curve: &[(f64, f64)], auc: f64, title: &str) -> Result<()> {
    let chart = Chart {
        title: title.into(),
        x_label: "false positive rate".into(),
        y_label: "true positive rate".into(),
        series: vec![
            Series { name: "chance".into(), color: GRAY, mark: Mark::Line, points: vec![(0.0, 0.0), (1.0, 1.0)] },
            Series { name: format!("ROC, AUC {auc:.3}"), color: PALETTE[0], mark: Mark::Line, points: curve.to_vec() },
        ],
        x_range: Some((0.0, 1.0)),
        y_range: Some((0.0, 1.0)),
    };
    write_chart(path, &chart)
}

/// `index,label,score,flagged`; the label column is empty without labels.
pub fn write_csv(path: &Path, scores: &[f64], labels: Option<&[u8]>, threshold: f64) -> Result<()> {
    let mut csv = String::from("index,label,score,flagged\n");
    for (i, &s) in scores.iter().enumerate() {
        let label = labels.map_or(String::new(), |l| l[i].to_string());
        writeln!(csv, "{i},{label},{s:.6},{}", u8::from(s > threshold)).expect("writing to a String");
    }
    write_atomic(path, csv.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand: anomalies score 0.9, 0.5, 0.5; normals 0.5, 0.2. Of the 6
    /// (anomaly, normal) pairs, 0.9 beats both (2), each 0.5 beats 0.2 and
    /// ties 0.5 (1.5 each): (2 + 1.5 + 1.5) / 6 = 5/6.
    #[test]
    fn auc_of_a_small_case_with_ties() {
        let scores = [0.5, 0.9, 0.2, 0.5, 0.5];
        let anomalous = [true, true, false, false, true];
        assert!((roc_auc(&scores, &anomalous).unwrap() - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(roc_auc(&scores, &[true; 5]), None);
        // The area under the curve's trapezoids is the same number.
        let curve = roc_curve(&scores, &anomalous);
        assert_eq!(curve, [(0.0, 0.0), (0.0, 1.0 / 3.0), (0.5, 1.0), (1.0, 1.0)]);
        let area: f64 = curve.windows(2).map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0).sum();
        assert!((area - 5.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn perfect_and_inverted_separation() {
        let anomalous = [false, false, true, true];
        assert_eq!(roc_auc(&[1.0, 2.0, 3.0, 4.0], &anomalous), Some(1.0));
        assert_eq!(roc_auc(&[4.0, 3.0, 2.0, 1.0], &anomalous), Some(0.0));
    }

    #[test]
    fn precision_and_recall_at_a_threshold() {
        let c = Confusion::at(&[0.1, 0.6, 0.7, 0.4, 0.9], &[false, false, true, true, true], 0.5);
        assert_eq!(c, Confusion { true_pos: 2, false_pos: 1, true_neg: 1, false_neg: 1 });
        assert!((c.precision() - 2.0 / 3.0).abs() < 1e-12 && (c.recall() - 2.0 / 3.0).abs() < 1e-12);
        assert!((threshold(&[1.0, 3.0], 2.0) - 4.0).abs() < 1e-12);
    }

    fn images(labels: Option<Vec<u8>>) -> Images {
        Images { pixels: (0..16).collect(), count: 4, channels: 1, rows: 2, cols: 2, labels, class_names: None }
    }

    /// The default threshold is fitted to the normal class's training images
    /// when there are labels, to all of them otherwise.
    #[test]
    fn the_threshold_is_fitted_to_the_normal_training_images() {
        let labeled = images(Some(vec![1, 0, 1, 2]));
        let (normal, which) = normal_training_images(&labeled, Some(1)).unwrap();
        assert_eq!((normal.count, which.as_str()), (2, "class-1"));
        assert_eq!(normal.pixels, labeled.select(&[0, 2]).pixels);
        let (all, which) = normal_training_images(&labeled, None).unwrap();
        assert_eq!((all.count, which.as_str()), (4, "all"));
        let (all, which) = normal_training_images(&images(None), Some(1)).unwrap();
        assert_eq!((all.count, which.as_str()), (4, "all"), "without labels no image is known to be normal");
        let e = normal_training_images(&labeled, Some(7)).unwrap_err().to_string();
        assert_eq!(e, "invalid --normal-class: no training images have label 7");
    }

    #[test]
    fn anomalies_are_the_other_labels_and_thresholds_are_finite() {
        assert_eq!(truth(Some(&[1, 0, 1]), Some(1)), Some(vec![false, true, false]));
        assert_eq!(truth(Some(&[1, 0]), None), None);
        assert_eq!(truth(None, Some(1)), None);
        assert!(ThresholdRule::Given(0.5).check().is_ok() && ThresholdRule::AboveNormal { k: -1.0 }.check().is_ok());
        let e = ThresholdRule::Given(f64::NAN).check().unwrap_err().to_string();
        assert_eq!(e, "invalid --threshold: NaN is not a finite number");
        let e = ThresholdRule::AboveNormal { k: f64::INFINITY }.check().unwrap_err().to_string();
        assert_eq!(e, "invalid --k: inf is not a finite number");
    }
}
