//! A conditional run's classes on the command line: a number, a name, or
//! (where the flag takes it) `all`.

use anyhow::bail;

use crate::train::run_dir::RunDir;

/// Errors unless `run` is conditional: `flag` needs it.
pub fn require_conditional(flag: &str, run: &RunDir) -> anyhow::Result<usize> {
    match run.arch().config.classes {
        0 => bail!("invalid {flag}: {} is not a conditional run (trained without --conditional)", run.path().display()),
        k => Ok(k),
    }
}

/// The class `k` names in a conditional `run`: its number or one of its
/// names (any case); `all` (only where `with_all`) is every class in turn.
pub fn resolve(flag: &str, k: &str, run: &RunDir, with_all: bool) -> anyhow::Result<Vec<u8>> {
    let classes = require_conditional(flag, run)?;
    if with_all && k == "all" {
        return Ok((0..classes).map(|c| c as u8).collect());
    }
    Ok(vec![parse_class(flag, k, classes, &run.config().class_names, with_all)?])
}

/// A class by number (below `classes`) or by one of `names` (any case).
pub fn parse_class(flag: &str, k: &str, classes: usize, names: &[String], with_all: bool) -> anyhow::Result<u8> {
    let last = classes - 1;
    if let Ok(i) = k.trim().parse::<usize>() {
        if i >= classes {
            bail!("invalid {flag}: {i}, but the run has {classes} classes (0 to {last})");
        }
        return Ok(i as u8);
    }
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(k.trim())) {
        return Ok(i as u8);
    }
    let all = if with_all { "`all`, " } else { "" };
    match names.is_empty() {
        true => bail!("invalid {flag}: {k:?} is not {all}a class number (0 to {last})"),
        false => {
            bail!("invalid {flag}: {k:?} is not {all}a class number (0 to {last}) or a name ({})", names.join(", "))
        }
    }
}
