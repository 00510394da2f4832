//! `pleas export MODEL -o FILE [--format onnx|torch] [--blocks split|dense] [--opset N]`
//! (`--format torch` writes every block layer dense and ignores `--blocks` and `--opset`).
//!
//! Every setting is checked before the model is read; the file is written to a temporary name
//! and renamed, so a failed export writes nothing.

use std::io::Write;

use super::{ExportArgs, Outcome};
use crate::error::Error;
use crate::export::{self, BlockMode, ExportSettings, Format};
use crate::model::Model;

fn format_of(a: &ExportArgs) -> Result<Format, Error> {
    match a.format.as_deref() {
        Some(name) => Format::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
            Error::Usage(format!(
                "--format `{name}`: expected {}",
                names.join(" or ")
            ))
        }),
        None => Ok(Format::from_path(&a.out).unwrap_or(Format::Onnx)),
    }
}

pub(super) fn run(a: &ExportArgs, out: &mut dyn Write) -> Result<Outcome, Error> {
    let format = format_of(a)?;
    let blocks = BlockMode::from_name(&a.blocks)
        .ok_or_else(|| Error::Usage(format!("--blocks `{}`: expected split or dense", a.blocks)))?;
    let settings = ExportSettings {
        blocks,
        opset: a.opset,
    };
    let model = Model::load(&a.model.model, a.model.arch.as_deref())?;
    let files = export::export_to(&model, format, &settings, &a.out)?;
    if !a.quiet {
        let blocks = match format {
            // The state_dict holds every block layer dense (zero cross blocks).
            Format::Torch => BlockMode::Dense,
            _ => blocks,
        };
        let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        writeln!(
            out,
            "wrote {} ({}, blocks {})",
            files.join(" and "),
            format.name(),
            blocks.name()
        )
        .map_err(|source| Error::Write {
            path: "<stdout>".into(),
            source,
        })?;
    }
    Ok(Outcome::Ok)
}
