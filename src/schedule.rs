//! Learning-rate schedules, as PyTorch defines them, evaluated per Adam step
//! on the host (in f64, then rounded) and handed to both engines as step
//! data: the CPU's `StepInputs` and the GPU's step row, so that a schedule
//! never recompiles a kernel and a resumed run sees the same rates.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// The same rate throughout.
    #[default]
    Constant,
    /// `CosineAnnealingLR` over the run's steps: lr_min + (lr − lr_min)·(1 + cos(π·t/T))/2.
    Cosine,
    /// `StepLR`: lr·gamma^⌊epoch / step_epochs⌋.
    Step,
}

/// A run's schedule (`config.json`'s `lr_schedule`; runs from before it are constant).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    /// Steps of linear warm-up from 0: step t (0-based) has t / warmup_steps
    /// of the schedule's rate while t < warmup_steps.
    pub warmup_steps: u64,
    /// Cosine: the rate at the end of the run.
    pub lr_min: f32,
    /// Step: epochs between decays, and the decay factor.
    pub step_epochs: usize,
    pub gamma: f32,
}

impl Default for LrSchedule {
    fn default() -> LrSchedule {
        LrSchedule { kind: ScheduleKind::Constant, warmup_steps: 0, lr_min: 0.0, step_epochs: 1, gamma: 0.1 }
    }
}

impl LrSchedule {
    pub fn is_constant(&self) -> bool {
        *self == LrSchedule::default()
    }

    /// Checks the settings against the base rate `lr`.
    pub fn validate(&self, lr: f32) -> Result<()> {
        if !self.lr_min.is_finite() || self.lr_min < 0.0 || self.lr_min > lr {
            return Err(Error::invalid("--lr-min", format!("{} is not in [0, --lr {lr}]", self.lr_min)));
        }
        if self.step_epochs == 0 {
            return Err(Error::invalid("--lr-step-epochs", "must be at least 1"));
        }
        if !self.gamma.is_finite() || self.gamma <= 0.0 || self.gamma > 1.0 {
            return Err(Error::invalid("--lr-gamma", format!("{} is not in (0, 1]", self.gamma)));
        }
        Ok(())
    }

    /// The schedule of a run of `epochs` epochs of `steps_per_epoch` steps.
    pub fn plan(&self, steps_per_epoch: usize, epochs: usize) -> LrPlan {
        let steps_per_epoch = steps_per_epoch.max(1) as u64;
        LrPlan { schedule: *self, steps_per_epoch, total_steps: steps_per_epoch * epochs as u64 }
    }
}

/// A schedule laid over a run's steps: what an epoch's steps need to know.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LrPlan {
    pub schedule: LrSchedule,
    pub steps_per_epoch: u64,
    pub total_steps: u64,
}

impl LrPlan {
    /// The rate of global step `step` (0-based; Adam's t is step + 1) for the base rate `lr`.
    pub fn lr(&self, lr: f32, step: u64) -> f32 {
        let s = &self.schedule;
        let base = lr as f64;
        let mut rate = match s.kind {
            ScheduleKind::Constant => return self.warm(lr, step),
            ScheduleKind::Cosine => {
                let min = s.lr_min as f64;
                let progress = step.min(self.total_steps) as f64 / self.total_steps.max(1) as f64;
                min + (base - min) * (1.0 + (std::f64::consts::PI * progress).cos()) / 2.0
            }
            ScheduleKind::Step => {
                let epoch = step / self.steps_per_epoch.max(1);
                base * (s.gamma as f64).powi((epoch / s.step_epochs.max(1) as u64) as i32)
            }
        };
        if step < s.warmup_steps {
            rate *= step as f64 / s.warmup_steps as f64;
        }
        rate as f32
    }

    /// A constant rate, warmed up: exactly `lr` after the warm-up.
    fn warm(&self, lr: f32, step: u64) -> f32 {
        let w = self.schedule.warmup_steps;
        if step < w { (lr as f64 * step as f64 / w as f64) as f32 } else { lr }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedules_follow_pytorch() {
        let plan = |kind, warmup_steps| {
            LrSchedule { kind, warmup_steps, lr_min: 1e-4, step_epochs: 2, gamma: 0.5 }.plan(10, 4)
        };
        let constant = plan(ScheduleKind::Constant, 0);
        assert_eq!(constant.lr(1e-3, 0), 1e-3);
        assert_eq!(constant.lr(1e-3, 39), 1e-3);
        // CosineAnnealingLR(T_max = 40, eta_min = 1e-4): 1e-3 at 0, the midpoint at 20, 1e-4 at 40.
        let cosine = plan(ScheduleKind::Cosine, 0);
        assert_eq!(cosine.lr(1e-3, 0), 1e-3);
        assert!((cosine.lr(1e-3, 20) - 5.5e-4).abs() < 1e-9);
        assert!((cosine.lr(1e-3, 10) - (1e-4 + 9e-4 * (1.0 + 0.5f64.sqrt()) / 2.0) as f32).abs() < 1e-9);
        assert!((cosine.lr(1e-3, 40) - 1e-4).abs() < 1e-10);
        // StepLR(step_size = 2 epochs, gamma = 0.5) with 10 steps an epoch.
        let step = plan(ScheduleKind::Step, 0);
        assert_eq!([0, 19, 20, 39].map(|s| step.lr(1e-3, s)), [1e-3, 1e-3, 5e-4, 5e-4]);
        // Linear warm-up from 0 over 5 steps, then the schedule.
        let warm = plan(ScheduleKind::Constant, 5);
        for (s, want) in [(0, 0.0), (1, 2e-4), (4, 8e-4), (5, 1e-3)] {
            assert!((warm.lr(1e-3, s) - want).abs() < 1e-10, "step {s}");
        }
        let warm_cosine = plan(ScheduleKind::Cosine, 5);
        assert!((warm_cosine.lr(1e-3, 2) - 0.4 * cosine.lr(1e-3, 2)).abs() < 1e-9);
    }

    #[test]
    fn bad_settings_are_refused_by_flag() {
        let s = |f: fn(&mut LrSchedule)| {
            let mut s = LrSchedule::default();
            f(&mut s);
            s.validate(1e-3).unwrap_err().to_string()
        };
        assert!(s(|s| s.lr_min = 0.01).contains("--lr-min"));
        assert!(s(|s| s.step_epochs = 0).contains("--lr-step-epochs"));
        assert!(s(|s| s.gamma = 0.0).contains("--lr-gamma"));
        assert!(s(|s| s.gamma = f32::NAN).contains("--lr-gamma"));
    }
}
