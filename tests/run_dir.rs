//! The library's side of using a trained run, without the binary: a run
//! folder opened (and refused, naming the file), and the uses' reports.

use std::path::{Path, PathBuf};

use gpu_vae::advanced::apps::anomaly::{self, AnomalyOptions, Score, ThresholdRule};
use gpu_vae::advanced::apps::eval::{self, EvalOptions};
use gpu_vae::advanced::apps::reconstruct::{self, ReconstructOptions};
use gpu_vae::advanced::apps::{self, Draws, Split};
use gpu_vae::advanced::checkpoint;
use gpu_vae::advanced::data::DataSet;
use gpu_vae::advanced::engine::AdamConfig;
use gpu_vae::advanced::error::Error;
use gpu_vae::advanced::model::{Activation, Architecture, InitScheme, ModelConfig, ModelKind, ReconLoss, init_params};
use gpu_vae::advanced::train::run_dir::{self, RunDir};
use gpu_vae::advanced::train::{CONFIG_FILE, MODEL_FILE, TrainConfig};

/// A small model of `kind` on the embedded data; the AE's normal class is 1.
fn small_config(kind: ModelKind) -> TrainConfig {
    let vae = kind == ModelKind::Vae;
    let config = TrainConfig {
        model: ModelConfig {
            kind,
            image_rows: 28,
            image_cols: 28,
            channels: 1,
            hidden: vec![16],
            latent: 4,
            loss: if vae { ReconLoss::Bce } else { ReconLoss::Mse },
            activation: Activation::Relu,
            arch: gpu_vae::advanced::model::Arch::Mlp,
            conv: vec![],
            classes: 0,
        },
        init: InitScheme::Torch,
        adam: AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 },
        lr_schedule: Default::default(),
        batch_size: 64,
        epochs: 1,
        beta: 1.0,
        kl_warmup: 0,
        noise_std: 0.0,
        seed: 3,
        normal_class: (!vae).then_some(1),
        data: "embedded".into(),
        test_fraction: 1.0 / 6.0,
        class_names: vec![],
    };
    config.validate().unwrap();
    config
}

/// A run folder as `train` leaves it (config.json and an untrained checkpoint), written with the library.
fn write_run(dir: &Path, config: &TrainConfig) -> PathBuf {
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let arch = Architecture::new(&config.model).unwrap();
    checkpoint::save(&run.join(MODEL_FILE), &arch, &init_params(&arch, config.init, config.seed)).unwrap();
    run_dir::write_config(&run, config).unwrap();
    run
}

fn edit_config(run: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let path = run.join(CONFIG_FILE);
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&path, json.to_string()).unwrap();
}

/// An opened run's model on the CPU, and its data.
fn open(run: &Path) -> (RunDir, Box<dyn apps::Inference>, DataSet) {
    let run = RunDir::open(run).unwrap();
    let model = apps::open_model(run.arch(), run.params().to_vec(), None).unwrap();
    let data = run.load_data().unwrap();
    (run, model, data)
}

#[test]
fn a_run_written_by_the_library_opens() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(ModelKind::Vae);
    let run = RunDir::open(&write_run(dir.path(), &config)).unwrap();
    assert_eq!(run.config(), &config);
    assert_eq!(run.arch().config, config.model);
    assert_eq!(run.params(), init_params(run.arch(), config.init, config.seed));
    assert_eq!(run.draws(), Draws { batch_size: 64, seed: 3 });
    let data = run.load_data().unwrap();
    assert_eq!((data.test.rows, data.test.cols), (28, 28));
}

#[test]
fn a_missing_folder_or_config_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-run");
    let err = RunDir::open(&missing).unwrap_err();
    assert!(matches!(&err, Error::BadFile { path, .. } if path == &missing), "{err:?}");
    assert!(err.to_string().contains("no-such-run: not a run directory"), "{err}");

    let run = write_run(dir.path(), &small_config(ModelKind::Vae));
    std::fs::remove_file(run.join(CONFIG_FILE)).unwrap();
    let err = RunDir::open(&run).unwrap_err();
    assert!(matches!(&err, Error::Io { path, .. } if path == &run.join(CONFIG_FILE)), "{err:?}");
}

#[test]
fn a_bad_config_json_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let run = write_run(dir.path(), &small_config(ModelKind::Vae));
    let config = run.join(CONFIG_FILE);

    std::fs::write(&config, "{ not json").unwrap();
    let err = RunDir::open(&run).unwrap_err();
    assert!(matches!(&err, Error::BadFile { path, .. } if path == &config), "{err:?}");
    assert!(err.to_string().contains("config.json: not a gpu-vae run configuration"), "{err}");

    // Parses, but fails validation: the file and the field are named, on one line.
    run_dir::write_config(&run, &small_config(ModelKind::Vae)).unwrap();
    edit_config(&run, |c| c["batch_size"] = serde_json::json!(0));
    let err = RunDir::open(&run).unwrap_err();
    match &err {
        Error::BadRunConfig { path, error } => {
            assert_eq!(path, &config);
            assert!(matches!(**error, Error::InvalidArg { name: "--batch-size", .. }), "{error:?}");
        }
        other => panic!("not a BadRunConfig: {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("config.json: not a valid run configuration: invalid --batch-size"), "{text}");
    assert_eq!(text.lines().count(), 1);

    // A model past the caps of `limits`.
    run_dir::write_config(&run, &small_config(ModelKind::Vae)).unwrap();
    edit_config(&run, |c| c["model"]["image_rows"] = serde_json::json!(1u64 << 20));
    let err = RunDir::open(&run).unwrap_err();
    assert!(matches!(&err, Error::BadRunConfig { path, .. } if path == &config), "{err:?}");
    assert!(err.to_string().contains("image rows"), "{err}");
}

#[test]
fn a_checkpoint_of_another_model_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(ModelKind::Vae);
    let run = write_run(dir.path(), &config);
    let mut other = config.model.clone();
    other.latent = 5;
    let arch = Architecture::new(&other).unwrap();
    checkpoint::save(&run.join(MODEL_FILE), &arch, &init_params(&arch, InitScheme::Torch, 1)).unwrap();
    let err = RunDir::open(&run).unwrap_err();
    assert!(matches!(&err, Error::BadFile { path, .. } if path == &run.join(MODEL_FILE)), "{err:?}");
    assert!(err.to_string().contains("model.safetensors: the checkpoint's model differs from config.json"), "{err}");

    std::fs::write(run.join(MODEL_FILE), b"not a checkpoint").unwrap();
    let err = RunDir::open(&run).unwrap_err();
    assert!(err.to_string().starts_with(&format!("{}: ", run.join(MODEL_FILE).display())), "{err}");
}

#[test]
fn the_reconstruct_report_holds_the_numbers_it_prints() {
    let dir = tempfile::tempdir().unwrap();
    let (_run, mut model, data) = open(&write_run(dir.path(), &small_config(ModelKind::Vae)));
    let (png, csv) = (dir.path().join("rec.png"), dir.path().join("rec.csv"));
    let o = ReconstructOptions { split: Split::Train, n: 3, out: png.clone(), csv: None, as_classes: vec![] };
    let report = reconstruct::run(model.as_mut(), &data, &o).unwrap();
    assert_eq!(report.mse.len(), 3);
    let x = apps::pixels(&data.train, &[0, 1, 2]);
    let y = apps::reconstruct(model.as_mut(), &x, None, 3).unwrap();
    assert_eq!(report.mse, apps::per_image_mse(&x, &y, 784));
    let text = report.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("image 0: MSE ") && lines[3].starts_with("3 train images: mean MSE "), "{text}");
    assert_eq!(lines[4], format!("wrote {}", png.display()));
    assert!(png.is_file());

    // With a CSV the per-image lines go there.
    let o = ReconstructOptions { split: Split::Test, n: 2, out: png, csv: Some(csv.clone()), as_classes: vec![] };
    let text = reconstruct::run(model.as_mut(), &data, &o).unwrap().to_string();
    assert!(text.starts_with(&format!("wrote {}\n2 test images", csv.display())), "{text}");
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 3);

    let o =
        ReconstructOptions { split: Split::Test, n: 0, out: dir.path().join("x.png"), csv: None, as_classes: vec![] };
    let err = reconstruct::run(model.as_mut(), &data, &o).err().unwrap();
    assert_eq!(err.to_string(), "invalid --n: must be at least 1");
}

#[test]
fn the_eval_report_splits_the_elbo() {
    let dir = tempfile::tempdir().unwrap();
    let (run, mut model, data) = open(&write_run(dir.path(), &small_config(ModelKind::Vae)));
    let o = EvalOptions { split: Split::Test, n: Some(50), k: Some(4) };
    let report = eval::run(model.as_mut(), &data, &o, run.draws()).unwrap();
    assert_eq!(report.count, 50);
    let (k, nll) = report.iwae.unwrap();
    assert_eq!(k, 4);
    assert!(report.recon > 0.0 && report.kl >= 0.0 && nll.is_finite(), "{}", report);
    assert!(report.to_string().contains(&format!("ELBO {:.3} = -(reconstruction", -(report.recon + report.kl))));

    let (run, mut model, data) = open(&write_run(&dir.path().join("ae"), &small_config(ModelKind::Ae)));
    let o = EvalOptions { split: Split::Test, n: Some(10), k: None };
    let report = eval::run(model.as_mut(), &data, &o, run.draws()).unwrap();
    assert!(report.iwae.is_none() && report.kl == 0.0);
    assert!(report.to_string().contains("no ELBO"));
    let o = EvalOptions { k: Some(3), ..o };
    let err = eval::run(model.as_mut(), &data, &o, run.draws()).err().unwrap();
    assert!(matches!(err, Error::InvalidArg { name: "--k", .. }), "{err:?}");
}

/// The default threshold is mean + k·std of the normal class's training
/// scores, and the counts follow from it.
#[test]
fn the_anomaly_report_follows_the_threshold_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (run, mut model, data) = open(&write_run(dir.path(), &small_config(ModelKind::Ae)));
    let normal_class = run.config().normal_class;
    assert_eq!(normal_class, Some(1));
    let o = AnomalyOptions {
        split: Split::Test,
        score: None,
        threshold: ThresholdRule::AboveNormal { k: 2.0 },
        normal_class,
        roc: None,
        csv: None,
    };
    let report = anomaly::run(model.as_mut(), &data, &o, run.draws()).unwrap();
    assert_eq!(report.score, Score::Recon, "an AE's default score");

    let (normal, which) = anomaly::normal_training_images(&data.train, Some(1)).unwrap();
    assert_eq!(which, "class-1");
    let pixels = apps::pixels(&normal, &(0..normal.count).collect::<Vec<_>>());
    let normal_scores = anomaly::scores(model.as_mut(), &pixels, None, normal.count, Score::Recon, 64, 3).unwrap();
    assert_eq!(report.threshold, anomaly::threshold(&normal_scores, 2.0));
    assert_eq!(report.origin, format!("mean + 2·std of {} class-1 training scores", normal.count));

    assert_eq!(report.scores.len(), data.test.count);
    assert_eq!(report.flagged, report.scores.iter().filter(|&&s| s > report.threshold).count());
    let separation = report.separation.as_ref().expect("labels and a normal class");
    let c = separation.confusion;
    assert_eq!(c.true_pos + c.false_pos, report.flagged);
    let anomalies = data.test.labels.as_ref().unwrap().iter().filter(|&&l| l != 1).count();
    assert_eq!(c.true_pos + c.false_neg, anomalies);
    let text = report.to_string();
    assert!(text.contains(&format!("{} of {} test images flagged", report.flagged, data.test.count)), "{text}");

    // Without a normal class: no separation, and --roc is refused before any scoring.
    let o = AnomalyOptions { normal_class: None, threshold: ThresholdRule::Given(0.05), ..o };
    let report = anomaly::run(model.as_mut(), &data, &o, run.draws()).unwrap();
    assert!(report.separation.is_none() && report.origin == "given");
    assert!(report.to_string().contains("no ROC-AUC"));
    let o = AnomalyOptions { roc: Some(dir.path().join("roc.png")), ..o };
    let err = anomaly::run(model.as_mut(), &data, &o, run.draws()).err().unwrap();
    assert!(matches!(err, Error::Unsupported { what: "--roc", .. }), "{err:?}");
    let o = AnomalyOptions { roc: None, score: Some(Score::Elbo), ..o };
    let err = anomaly::run(model.as_mut(), &data, &o, run.draws()).err().unwrap();
    assert!(err.to_string().contains("--score elbo") && err.to_string().contains("needs a VAE"), "{err}");
}
