//! TensorBoard event files end to end: a short run's file holds, in valid
//! TFRecord framing, metrics.csv's numbers per epoch, the running loss per
//! tick, the epoch's pictures and config.json; `--resume` adds a file whose
//! steps continue the first (left as it was); `--no-tensorboard` writes none.
//! Small VAEs (hidden 16, latent 4) on the embedded data, on the CPU.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use gpu_vae::advanced::train::tensorboard::proto::{self, Event, Kind, What};
use gpu_vae::advanced::train::tensorboard::{EVENTS_PREFIX, masked_crc};
use gpu_vae::advanced::train::{CONFIG_TAG, METRICS_FILE, PICTURE_TAGS, RUNNING_LOSS_TAG, tag_of};
use prost::Message;

/// A new run's model (a resumed one has its own).
const SMALL: [&str; 4] = ["--hidden", "16", "--latent", "4"];

fn ok(args: &[&str]) {
    let out = Command::cargo_bin("gpu-vae").unwrap().args(args).args(["--quiet", "--device", "cpu"]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The run's event files, oldest first (by their first event's time: two
/// sessions within one second may sort the other way by name).
fn event_files(run: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(EVENTS_PREFIX))
        .collect();
    files.sort_by(|a, b| read_events(a)[0].wall_time.total_cmp(&read_events(b)[0].wall_time));
    files
}

/// Every record of an event file, its two CRCs checked, decoded.
fn read_events(path: &Path) -> Vec<Event> {
    let bytes = std::fs::read(path).unwrap();
    let (mut rest, mut events) = (&bytes[..], Vec::new());
    while !rest.is_empty() {
        assert!(rest.len() >= 12, "{}: a torn record header", path.display());
        let len_bytes = &rest[..8];
        let crc = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap());
        assert_eq!(crc(&rest[8..12]), masked_crc(len_bytes), "{}: the length's CRC", path.display());
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let payload = &rest[12..12 + len];
        assert_eq!(crc(&rest[12 + len..16 + len]), masked_crc(payload), "{}: the payload's CRC", path.display());
        events.push(Event::decode(payload).unwrap());
        rest = &rest[16 + len..];
    }
    events
}

/// The summary values of `events`, with their steps.
fn values(events: &[Event]) -> Vec<(i64, proto::Value)> {
    let mut out = Vec::new();
    for e in events {
        if let Some(What::Summary(summary)) = &e.what {
            out.extend(summary.value.iter().map(|v| (e.step, v.clone())));
        }
    }
    out
}

fn scalars(events: &[Event], tag: &str) -> Vec<(i64, f32)> {
    let pick = |(step, v): (i64, proto::Value)| match v.value {
        Some(Kind::SimpleValue(x)) if v.tag == tag => Some((step, x)),
        _ => None,
    };
    values(events).into_iter().filter_map(pick).collect()
}

/// metrics.csv's columns per epoch, each value as f32.
fn metrics(run: &Path) -> Vec<BTreeMap<String, f32>> {
    let text = std::fs::read_to_string(run.join(METRICS_FILE)).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|line| {
            header.iter().zip(line.split(',')).map(|(h, v)| (h.to_string(), v.parse::<f64>().unwrap() as f32)).collect()
        })
        .collect()
}

/// Checks one file: its version record, and for each epoch in `epochs`
/// (1-based) its scalars against metrics.csv and its pictures against
/// epochs/; returns the step of each of those epochs.
fn check_file(run: &Path, events: &[Event], epochs: std::ops::RangeInclusive<usize>) -> Vec<i64> {
    assert_eq!(events[0].what, Some(What::FileVersion("brain.Event:2".into())));
    let rows = metrics(run);
    let epoch_steps = scalars(events, "epoch");
    assert_eq!(epoch_steps.iter().map(|&(_, e)| e as usize).collect::<Vec<_>>(), epochs.clone().collect::<Vec<_>>());
    let mut steps = Vec::new();
    for &(step, epoch) in &epoch_steps {
        let row = &rows[epoch as usize - 1];
        for (column, want) in row {
            let got = scalars(events, &tag_of(column));
            assert!(got.contains(&(step, *want)), "{column} of epoch {epoch}: {got:?}, metrics.csv {want}");
        }
        for (tag, file) in PICTURE_TAGS.iter().zip(["samples", "reconstructions"]) {
            let image = values(events)
                .into_iter()
                .find_map(|(at, v)| match v.value {
                    Some(Kind::Image(image)) if at == step && v.tag == *tag => Some(image),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("no {tag} at epoch {epoch}"));
            let png =
                image::load_from_memory_with_format(&image.encoded_image_string, image::ImageFormat::Png).unwrap();
            assert_eq!((png.width(), png.height()), (image.width as u32, image.height as u32));
            let on_disk = std::fs::read(run.join(format!("epochs/{file}-{epoch:03}.png"))).unwrap();
            assert!(on_disk == image.encoded_image_string, "{tag} of epoch {epoch} is the epoch's PNG");
        }
        steps.push(step);
    }
    steps
}

/// The configuration text at its step: config.json, indented as Markdown code.
fn config_text(events: &[Event]) -> (i64, String) {
    let (step, value) = values(events).into_iter().find(|(_, v)| v.tag == CONFIG_TAG).expect("a config text");
    let plugin = value.metadata.and_then(|m| m.plugin_data).expect("plugin data");
    assert_eq!(plugin.plugin_name, "text");
    let Some(Kind::Tensor(tensor)) = value.value else { panic!("the config is a tensor") };
    assert_eq!(tensor.dtype, proto::DT_STRING);
    assert_eq!((tensor.tensor_shape.unwrap().dim.len(), tensor.string_val.len()), (0, 1), "one string");
    let text = String::from_utf8(tensor.string_val[0].clone()).unwrap();
    assert!(text.lines().all(|l| l.starts_with("    ")), "a Markdown code block");
    (step, text.lines().map(|l| format!("{}\n", &l[4..])).collect())
}

#[test]
fn a_run_and_its_resumption_log_metrics_pictures_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(&[&["train", "--epochs", "2", "--out", s(&run)], &SMALL[..]].concat());
    let files = event_files(&run);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    let fields: Vec<&str> = name.trim_start_matches(EVENTS_PREFIX).split('.').collect();
    assert!(fields[0].len() == 10 && fields[0].bytes().all(|b| b.is_ascii_digit()), "{name}: unix seconds");
    assert!(fields.last().unwrap().parse::<u32>().is_ok(), "{name}: a process id last");

    let first = read_events(&files[0]);
    let steps = check_file(&run, &first, 1..=2);
    let batches = steps[0];
    assert_eq!(steps, [batches, 2 * batches], "steps are optimizer steps");
    let config = std::fs::read_to_string(run.join("config.json")).unwrap();
    assert_eq!(config_text(&first), (0, format!("{}\n", config.trim_end())));
    let ticks = scalars(&first, RUNNING_LOSS_TAG);
    assert!(ticks.len() >= 4 && ticks.windows(2).all(|w| w[0].0 < w[1].0), "{ticks:?}");
    assert_eq!(ticks.last().unwrap().0, 2 * batches);
    assert!(ticks.iter().all(|&(step, loss)| step > 0 && loss.is_finite()));

    // Resumed: the first file stays as it was, a second continues its steps.
    let before = std::fs::read(&files[0]).unwrap();
    ok(&["train", "--resume", s(&run), "--epochs", "3"]);
    let files = event_files(&run);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(std::fs::read(&files[0]).unwrap() == before, "the first file is left as it was");
    let second = read_events(&files[1]);
    assert_eq!(second[1].what, Some(What::SessionLog(proto::SessionLog { status: proto::SESSION_START })));
    assert_eq!(second[1].step, 2 * batches + 1, "a restart at the first step to come");
    assert_eq!(check_file(&run, &second, 3..=3), [3 * batches]);
    let config = std::fs::read_to_string(run.join("config.json")).unwrap();
    assert_eq!(config_text(&second), (2 * batches, format!("{}\n", config.trim_end())));
    let ticks = scalars(&second, RUNNING_LOSS_TAG);
    assert!(ticks.iter().all(|&(step, _)| step > 2 * batches && step <= 3 * batches), "{ticks:?}");

    // A resumption without event files adds none.
    ok(&["train", "--resume", s(&run), "--epochs", "4", "--no-tensorboard"]);
    assert_eq!(event_files(&run).len(), 2);
    // A new run in the folder replaces the old run's files with its own one.
    // (An AE: its 40 batches of 256 tick at every batch, and at the last twice.)
    ok(&[&["train", "--model", "ae", "--epochs", "1", "--out", s(&run), "--force"], &SMALL[..]].concat());
    let files = event_files(&run);
    assert_eq!(files.len(), 1, "{files:?}");
    let events = read_events(&files[0]);
    assert_eq!(check_file(&run, &events, 1..=1), [40]);
    let ticks = scalars(&events, RUNNING_LOSS_TAG);
    assert!(ticks.windows(2).all(|w| w[0].0 < w[1].0), "one point a step: {ticks:?}");
}

/// A new run that ends before its first checkpoint leaves no event file,
/// beside an older run (`--force`) or alone.
#[test]
fn a_run_without_a_checkpoint_leaves_no_event_file() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let diverge = |extra: &[&str]| {
        let args = [&["train", "--lr", "1e30", "--epochs", "1", "--out", s(&run)], extra, &SMALL[..]].concat();
        let out = Command::cargo_bin("gpu-vae").unwrap().args(args).args(["--device", "cpu"]).output().unwrap();
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("at step"));
    };
    diverge(&[]);
    assert!(event_files(&run).is_empty());
    ok(&[&["train", "--epochs", "1", "--out", s(&run)], &SMALL[..]].concat());
    let old = event_files(&run);
    assert_eq!(old.len(), 1);
    diverge(&["--force"]);
    assert_eq!(event_files(&run), old, "the old run's file stays, alone");
}

#[test]
fn no_tensorboard_writes_no_event_file() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(&[&["train", "--epochs", "1", "--out", s(&run), "--no-tensorboard"], &SMALL[..]].concat());
    assert!(run.join(METRICS_FILE).exists());
    assert!(event_files(&run).is_empty());
}
