//! Per-kernel GPU time of training steps, from timestamp queries
//! (`gpu-vae bench --profile`).
//!
//! A few steps are recorded again with a timestamp before and after every
//! dispatch, resolved into a buffer and read back once per chunk of steps. Only
//! this path writes queries: the normal one records no query at all.
//!
//! On Vulkan wgpu writes timestamps at the bottom of the pipe, i.e. once all
//! earlier work is done, so a dispatch's time runs from the end of the one
//! before it to its own end: its launch and barrier wait included, overlap
//! excluded. The dispatch times of a step add up to its GPU time.

use std::collections::HashMap;

use super::context::GpuContext;
use super::program::{Program, StepTable};
use crate::error::{Error, Result};

/// How timestamps are written around each dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampMode {
    /// `ComputePass::write_timestamp` in one pass per chunk of steps, as the
    /// normal path records them (`TIMESTAMP_QUERY_INSIDE_PASSES`).
    InsidePasses,
    /// One compute pass per dispatch with `timestamp_writes` (only
    /// `TIMESTAMP_QUERY`): pass boundaries add work the normal path does not do.
    PassPerDispatch,
}

impl TimestampMode {
    /// The best mode the context's device was opened with, if any.
    pub fn best(ctx: &GpuContext) -> Option<TimestampMode> {
        [TimestampMode::InsidePasses, TimestampMode::PassPerDispatch].into_iter().find(|m| m.supported(ctx))
    }

    pub fn supported(self, ctx: &GpuContext) -> bool {
        let need = match self {
            TimestampMode::InsidePasses => {
                wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
            }
            TimestampMode::PassPerDispatch => wgpu::Features::TIMESTAMP_QUERY,
        };
        ctx.timestamps.contains(need)
    }

    pub fn describe(self) -> &'static str {
        match self {
            TimestampMode::InsidePasses => "timestamps inside the compute pass",
            TimestampMode::PassPerDispatch => {
                "one compute pass per dispatch (no TIMESTAMP_QUERY_INSIDE_PASSES): pass boundaries inflate every kernel's overhead"
            }
        }
    }
}

/// One dispatch of one profiled step.
#[derive(Clone, Debug, PartialEq)]
pub struct DispatchTime {
    /// Index among the profiled steps.
    pub step: usize,
    /// Index within the step's dispatch list.
    pub index: usize,
    pub label: String,
    /// End minus begin, in ns; negative only when the adapter's clock is not monotonic.
    pub ns: f64,
}

/// The dispatches that share a label, over all profiled steps.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelRow {
    pub label: String,
    pub calls_per_step: f64,
    /// Mean GPU time per step spent in these dispatches.
    pub us_per_step: f64,
    /// Of the step's GPU time (the sum over dispatches).
    pub share: f64,
    /// Arithmetic rate of products and convolutions (`Dispatch::flops`).
    pub gflops: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct Profile {
    pub mode: TimestampMode,
    pub steps: usize,
    /// Every dispatch, step by step, in recording order.
    pub dispatches: Vec<DispatchTime>,
    /// Slowest first.
    pub kernels: Vec<KernelRow>,
    /// Sum of the dispatch times, per step.
    pub gpu_us_per_step: f64,
    /// First begin to last end of a step, averaged: the GPU time plus any gaps
    /// between dispatches.
    pub span_us_per_step: f64,
    /// Dispatches whose end came before their begin.
    pub backwards: usize,
}

/// Builds a profile from raw timestamps: `labels[s]` names the dispatches of
/// step s, and `ticks` holds a (begin, end) pair per dispatch, step after
/// step, in ticks of `period_ns` nanoseconds.
pub fn aggregate(mode: TimestampMode, labels: &[Vec<String>], ticks: &[u64], period_ns: f64) -> Result<Profile> {
    let total: usize = labels.iter().map(Vec::len).sum();
    if ticks.len() != 2 * total {
        return Err(Error::Gpu(format!("profile: {} timestamps for {total} dispatches", ticks.len())));
    }
    let steps = labels.len();
    let ns = |begin: u64, end: u64| (end as i128 - begin as i128) as f64 * period_ns;
    let mut dispatches = Vec::with_capacity(total);
    let mut span_ns = 0.0;
    let mut at = 0;
    for (step, names) in labels.iter().enumerate() {
        let pairs = &ticks[2 * at..2 * (at + names.len())];
        if let (Some(first), Some(last)) = (pairs.first(), pairs.last()) {
            span_ns += ns(*first, *last);
        }
        for (index, (label, pair)) in names.iter().zip(pairs.chunks_exact(2)).enumerate() {
            dispatches.push(DispatchTime { step, index, label: label.clone(), ns: ns(pair[0], pair[1]) });
        }
        at += names.len();
    }

    // By label, in order of first appearance (the sort below is stable).
    let mut order: Vec<&str> = Vec::new();
    let mut sums: HashMap<&str, (usize, f64)> = HashMap::new();
    for d in &dispatches {
        let e = sums.entry(&d.label).or_insert_with(|| {
            order.push(&d.label);
            (0, 0.0)
        });
        e.0 += 1;
        e.1 += d.ns;
    }
    let per_step = |x: f64| if steps == 0 { 0.0 } else { x / steps as f64 };
    let gpu_ns: f64 = dispatches.iter().map(|d| d.ns).sum();
    let mut kernels: Vec<KernelRow> = order
        .iter()
        .map(|&label| {
            let (calls, ns) = sums[label];
            KernelRow {
                label: label.to_string(),
                calls_per_step: per_step(calls as f64),
                us_per_step: per_step(ns) / 1e3,
                share: if gpu_ns > 0.0 { ns / gpu_ns } else { 0.0 },
                gflops: None,
            }
        })
        .collect();
    kernels.sort_by(|a, b| b.us_per_step.total_cmp(&a.us_per_step));
    Ok(Profile {
        mode,
        steps,
        backwards: dispatches.iter().filter(|d| d.ns < 0.0).count(),
        dispatches,
        kernels,
        gpu_us_per_step: per_step(gpu_ns) / 1e3,
        span_us_per_step: per_step(span_ns) / 1e3,
    })
}

impl Profile {
    /// Sets each kernel's rate from `flops[s][i]`, the work of step s's
    /// dispatch i (as `aggregate`'s labels list them).
    pub fn with_flops(mut self, flops: &[Vec<Option<f64>>]) -> Profile {
        let mut work: HashMap<&str, (f64, f64)> = HashMap::new();
        for d in &self.dispatches {
            if let Some(f) = flops.get(d.step).and_then(|s| s.get(d.index)).copied().flatten() {
                let e = work.entry(&d.label).or_default();
                (e.0, e.1) = (e.0 + f, e.1 + d.ns);
            }
        }
        let rates: HashMap<String, f64> =
            work.into_iter().filter(|(_, (_, ns))| *ns > 0.0).map(|(l, (f, ns))| (l.to_string(), f / ns)).collect();
        for k in &mut self.kernels {
            k.gflops = rates.get(&k.label).copied();
        }
        self
    }

    /// The table `bench --profile` prints: one row per label, then the step's
    /// GPU time against `wall_us_per_step` (from the epoch timing) when known.
    pub fn table(&self, wall_us_per_step: Option<f64>) -> String {
        let width = self.kernels.iter().map(|k| k.label.len()).max().unwrap_or(0).max(44);
        let mut s = String::new();
        let mut line = |text: String| {
            s.push_str(text.trim_end());
            s.push('\n');
        };
        line(format!("profile: {} steps, {}", self.steps, self.mode.describe()));
        line(format!(
            "{:<width$}  {:>10}  {:>10}  {:>7}  {:>8}",
            "kernel", "calls/step", "us/step", "share", "GFLOP/s"
        ));
        for k in &self.kernels {
            let rate = k.gflops.map(|g| format!("{g:.1}")).unwrap_or_default();
            line(format!(
                "{:<width$}  {:>10.2}  {:>10.2}  {:>6.1}%  {rate:>8}",
                k.label,
                k.calls_per_step,
                k.us_per_step,
                100.0 * k.share
            ));
        }
        let calls: f64 = self.kernels.iter().map(|k| k.calls_per_step).sum();
        let row = |name: &str, calls: String, us: f64, share: String| {
            format!("{name:<width$}  {calls:>10}  {us:>10.2}  {share:>7}")
        };
        line(row(
            "GPU time per step (sum of dispatches)",
            format!("{calls:.2}"),
            self.gpu_us_per_step,
            "100.0%".into(),
        ));
        line(row("GPU span per step (first begin to last end)", String::new(), self.span_us_per_step, String::new()));
        if let Some(wall) = wall_us_per_step {
            line(row("wall time per step (median epoch / steps)", String::new(), wall, String::new()));
            let host = wall - self.gpu_us_per_step;
            let share = if wall > 0.0 { format!("{:.1}%", 100.0 * host / wall) } else { String::new() };
            line(row("host/launch overhead (wall - GPU time)", String::new(), host, share));
        }
        if self.backwards > 0 {
            line(format!(
                "warning: {} dispatches ended before they began: this adapter's timestamps are unreliable",
                self.backwards
            ));
        }
        s
    }
}

/// Records `steps` (rows 0.. of `table`, already uploaded) as `programs` in
/// order each step, with a timestamp before and after every dispatch, and
/// returns the raw timestamps: (begin, end) per dispatch, step after step.
pub fn record_steps(
    ctx: &GpuContext,
    mode: TimestampMode,
    table: &StepTable,
    programs: &[&Program],
    steps: usize,
) -> Result<Vec<u64>> {
    if !mode.supported(ctx) {
        return Err(Error::Gpu(format!("{}: no timestamp queries for {mode:?}", ctx.info.name)));
    }
    let per_step: u32 = programs.iter().map(|p| p.len() as u32).sum::<u32>() * 2;
    let max = wgpu::QUERY_SET_MAX_QUERIES;
    if per_step > max {
        return Err(Error::Gpu(format!("profile: a step needs {per_step} timestamps, a query set holds {max}")));
    }
    let chunk = ((max / per_step.max(1)) as usize).max(1);
    let capacity = per_step * chunk.min(steps).max(1) as u32;
    let queries = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
        label: Some("profile"),
        ty: wgpu::QueryType::Timestamp,
        count: capacity,
    });
    let bytes = capacity as u64 * 8;
    let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("profile resolve"),
        size: bytes,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("profile readback"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });

    let mut ticks = Vec::with_capacity(steps * per_step as usize);
    let mut done = 0;
    while done < steps {
        let end = (done + chunk).min(steps);
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        let mut q = 0u32;
        match mode {
            TimestampMode::InsidePasses => {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("profile"),
                    timestamp_writes: None,
                });
                for s in done..end {
                    pass.set_bind_group(1, &table.bind, &[table.offset(s)]);
                    for d in programs.iter().flat_map(|p| &p.dispatches) {
                        pass.write_timestamp(&queries, q);
                        d.record(&mut pass);
                        pass.write_timestamp(&queries, q + 1);
                        q += 2;
                    }
                }
            }
            TimestampMode::PassPerDispatch => {
                for s in done..end {
                    for d in programs.iter().flat_map(|p| &p.dispatches) {
                        let writes = wgpu::ComputePassTimestampWrites {
                            query_set: &queries,
                            beginning_of_pass_write_index: Some(q),
                            end_of_pass_write_index: Some(q + 1),
                        };
                        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: Some("profile"),
                            timestamp_writes: Some(writes),
                        });
                        pass.set_bind_group(1, &table.bind, &[table.offset(s)]);
                        d.record(&mut pass);
                        q += 2;
                    }
                }
            }
        }
        let used = q as u64 * 8;
        enc.resolve_query_set(&queries, 0..q, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, &readback, 0, used);
        ctx.queue.submit([enc.finish()]);
        ticks.extend(map_u64(ctx, &readback, used)?);
        done = end;
    }
    Ok(ticks)
}

/// Maps a MAP_READ buffer and copies out its first `bytes` as u64.
fn map_u64(ctx: &GpuContext, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u64>> {
    let slice = buffer.slice(..bytes);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    ctx.wait()?;
    rx.recv()
        .map_err(|_| Error::Gpu("profile readback callback was dropped".into()))?
        .map_err(|e| Error::Gpu(format!("profile readback: {e}")))?;
    let out = {
        let view = slice.get_mapped_range().map_err(|e| Error::Gpu(format!("profile readback: {e}")))?;
        bytemuck::cast_slice::<u8, u64>(&view).to_vec()
    };
    buffer.unmap();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str], steps: usize) -> Vec<Vec<String>> {
        vec![names.iter().map(|s| s.to_string()).collect(); steps]
    }

    /// Back-to-back dispatches: each begins where the one before ended.
    fn ticks(durations: &[u64], steps: usize, gap: u64) -> Vec<u64> {
        let mut t = 1_000;
        let mut out = Vec::new();
        for _ in 0..steps {
            for &d in durations {
                out.extend([t, t + d]);
                t += d + gap;
            }
        }
        out
    }

    #[test]
    fn aggregates_by_label_per_step() {
        let names = ["gather_batch", "matmul_nt Tile32 128x784x400 /4", "relu_backward", "relu_backward"];
        // In ticks of 2 ns: 10, 100, 5 and 15 ticks.
        let p =
            aggregate(TimestampMode::InsidePasses, &labels(&names, 4), &ticks(&[10, 100, 5, 15], 4, 0), 2.0).unwrap();
        assert_eq!(p.steps, 4);
        assert_eq!(p.dispatches.len(), 16);
        assert_eq!(p.dispatches[5], DispatchTime { step: 1, index: 1, label: names[1].into(), ns: 200.0 });
        assert_eq!(p.backwards, 0);
        let got: Vec<(&str, f64, f64)> =
            p.kernels.iter().map(|k| (k.label.as_str(), k.calls_per_step, k.us_per_step)).collect();
        assert_eq!(got, [(names[1], 1.0, 0.2), ("relu_backward", 2.0, 0.04), ("gather_batch", 1.0, 0.02)]);
        assert!((p.gpu_us_per_step - 0.26).abs() < 1e-12);
        assert!((p.span_us_per_step - 0.26).abs() < 1e-12);
        let shares: f64 = p.kernels.iter().map(|k| k.share).sum();
        assert!((shares - 1.0).abs() < 1e-12);
        assert!((p.kernels[0].share - 200.0 / 260.0).abs() < 1e-12);
    }

    #[test]
    fn rates_come_from_each_labels_work_and_time() {
        // 100 and 300 ns per step; only the product has work (600 flops a step).
        let p =
            aggregate(TimestampMode::InsidePasses, &labels(&["gather", "product"], 2), &ticks(&[100, 300], 2, 0), 1.0)
                .unwrap()
                .with_flops(&[vec![None, Some(600.0)], vec![None, Some(600.0)]]);
        let rates: Vec<(&str, Option<f64>)> = p.kernels.iter().map(|k| (k.label.as_str(), k.gflops)).collect();
        assert_eq!(rates, [("product", Some(2.0)), ("gather", None)]);
        assert!(p.table(None).contains("GFLOP/s"));
    }

    #[test]
    fn span_counts_gaps_that_dispatch_times_do_not() {
        let p =
            aggregate(TimestampMode::PassPerDispatch, &labels(&["a", "b"], 2), &ticks(&[10, 30], 2, 5), 1.0).unwrap();
        assert!((p.gpu_us_per_step - 0.040).abs() < 1e-12);
        // a, gap, b: the gap after b falls between steps.
        assert!((p.span_us_per_step - 0.045).abs() < 1e-12);
    }

    #[test]
    fn labels_may_differ_between_steps() {
        // A short batch names its products with its own rows.
        let mut l = labels(&["matmul_nt Tile32 128x784x400"], 2);
        l[1][0] = "matmul_nt Tile32 96x784x400".into();
        let p = aggregate(TimestampMode::InsidePasses, &l, &ticks(&[1000, 500], 1, 0), 1.0).unwrap();
        assert_eq!(p.kernels.len(), 2);
        assert_eq!(p.kernels[0].calls_per_step, 0.5);
        assert_eq!(p.kernels[0].us_per_step, 0.5);
    }

    #[test]
    fn backwards_clocks_are_counted_not_hidden() {
        let p = aggregate(TimestampMode::InsidePasses, &labels(&["a", "b"], 1), &[10, 20, 40, 30], 1.0).unwrap();
        assert_eq!(p.backwards, 1);
        assert_eq!(p.dispatches[1].ns, -10.0);
        assert!(p.table(None).contains("warning: 1 dispatches ended before"));
    }

    #[test]
    fn rejects_a_count_mismatch() {
        assert!(aggregate(TimestampMode::InsidePasses, &labels(&["a", "b"], 2), &[0; 6], 1.0).is_err());
    }

    #[test]
    fn table_rows_and_totals() {
        let names = ["matmul_nt Tile64 128x784x400", "adam_update"];
        let p = aggregate(TimestampMode::InsidePasses, &labels(&names, 10), &ticks(&[3000, 1000], 10, 0), 1.0).unwrap();
        let t = p.table(Some(10.0));
        let lines: Vec<&str> = t.lines().collect();
        let tokens = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
        assert!(lines[0].starts_with("profile: 10 steps, timestamps inside"), "{t}");
        assert_eq!(tokens(1), ["kernel", "calls/step", "us/step", "share", "GFLOP/s"], "{t}");
        assert_eq!(tokens(2), ["matmul_nt", "Tile64", "128x784x400", "1.00", "3.00", "75.0%"], "{t}");
        assert_eq!(tokens(3), ["adam_update", "1.00", "1.00", "25.0%"], "{t}");
        assert!(lines[4].starts_with("GPU time per step") && tokens(4).ends_with(&["2.00", "4.00", "100.0%"]), "{t}");
        assert!(lines[5].starts_with("GPU span per step") && tokens(5).ends_with(&["end)", "4.00"]), "{t}");
        assert!(lines[6].starts_with("wall time per step") && tokens(6).ends_with(&["10.00"]), "{t}");
        assert!(lines[7].starts_with("host/launch overhead") && tokens(7).ends_with(&["6.00", "60.0%"]), "{t}");
        // The numbers line up under their headers.
        let col = |i: usize, what: &str| lines[i].find(what).unwrap() + what.len();
        assert_eq!(col(1, "us/step"), col(2, "3.00"));
        assert_eq!(col(1, "us/step"), col(7, "6.00"));
        assert_eq!(lines.len(), 8);
    }
}
