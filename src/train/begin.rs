//! A new run from a configuration, up to its first step: the folder taken,
//! the data read and fitted into the configuration (image size, channels,
//! classes), the model built and initialised. `gpu-vae train` and the
//! library's `gpu_vae::train` both start here.

use std::path::Path;

use super::TrainConfig;
use super::run_dir::{self, RunDirLock};
use crate::data::{DataSet, Images};
use crate::error::{Error, Result};
use crate::model::{Architecture, init_params};

/// What a new run needs besides its configuration.
#[derive(Clone, Copy, Debug, Default)]
pub struct NewRunOptions {
    /// Replace a run already in the folder (`--force`).
    pub force: bool,
    /// Channels a folder of pictures is read as (`--channels`); `None`: its own.
    pub channels: Option<usize>,
    /// A conditional model over the data's classes (`--conditional`).
    pub conditional: bool,
}

/// A new run ready to train: its folder held until it is dropped.
pub struct NewRun {
    pub config: TrainConfig,
    pub arch: Architecture,
    /// The initial parameters.
    pub params: Vec<f32>,
    pub data: DataSet,
    pub lock: RunDirLock,
}

/// Takes `out` for a new run of `config` and reads its data; the image size,
/// channels and classes of the configuration become the data's.
pub fn new_run(mut config: TrainConfig, out: &Path, o: &NewRunOptions) -> Result<NewRun> {
    config.validate()?;
    if config.epochs == 0 {
        return Err(Error::invalid("--epochs", "0; a run trains at least 1 epoch"));
    }
    super::prepare_out_dir(out)?;
    run_dir::check_out_outside_data(out, &config)?;
    let lock = run_dir::claim(out, o.force)?;

    let data = run_dir::load_data_with_channels(&config, o.channels)?;
    config.model.image_rows = data.train.rows;
    config.model.image_cols = data.train.cols;
    config.model.channels = data.train.channels;
    if let Some(asked) = o.channels.filter(|&c| c != data.train.channels) {
        return Err(Error::invalid(
            "--channels",
            format!(
                "{asked}, but data {} has {} channel(s); --channels applies to folders of pictures only",
                config.data, data.train.channels
            ),
        ));
    }
    if o.conditional {
        config.model.classes = class_count(&data, &config.data)?;
        config.class_names = data.train.class_names.clone().unwrap_or_default();
    }
    // Again with the data's image size, which IDX files choose.
    config.validate().map_err(|e| Error::bad_file(format!("data {}", config.data), e.to_string()))?;
    let arch = Architecture::new(&config.model)?;
    let params = init_params(&arch, config.init, config.seed);
    Ok(NewRun { config, arch, params, data, lock })
}

/// Classes of a labelled data set: as many as it names (a folder's
/// sub-folders, CIFAR's and Fashion-MNIST's names), else the largest label
/// plus one; refused for unlabelled data and labels beyond the names.
fn class_count(data: &DataSet, name: &str) -> Result<usize> {
    let mut most = 0;
    for images in [&data.train, &data.test] {
        let Some(labels) = &images.labels else {
            return Err(Error::invalid(
                "--conditional",
                format!("data {name} has no labels (a folder needs one sub-folder per class)"),
            ));
        };
        most = most.max(labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0));
    }
    let named = data.train.class_names.as_ref().map(Vec::len);
    if let Some(named) = named.filter(|&n| n < most) {
        return Err(Error::bad_file(
            format!("data {name}"),
            format!("label {} but only {named} class names", most - 1),
        ));
    }
    let classes = named.unwrap_or(most);
    if classes < 2 {
        return Err(Error::invalid(
            "--conditional",
            format!("data {name} has {classes} class(es); conditioning needs 2 or more"),
        ));
    }
    Ok(classes)
}

/// The images a run trains on: the training split, or only its normal class
/// (`--normal-class`).
pub fn training_images(train: Images, normal_class: Option<u8>) -> Result<Images> {
    let Some(class) = normal_class else { return Ok(train) };
    let normal = train.with_label(class);
    if normal.count == 0 {
        return Err(Error::invalid("--normal-class", format!("{class}: no training images have this label")));
    }
    Ok(normal)
}
