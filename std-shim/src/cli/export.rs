//! `pleas export MODEL --format torch -o FILE.pt`.

use std::io::Write;

use super::{ExportArgs, Outcome};
use crate::error::Error;
use crate::export::torch;
use crate::model::Model;

pub(super) fn run(a: &ExportArgs, out: &mut dyn Write) -> Result<Outcome, Error> {
    let by_extension = a
        .out
        .extension()
        .and_then(|e| e.to_str())
        .filter(|e| matches!(*e, "pt" | "pth" | "bin"))
        .map(|_| "torch");
    match a.format.as_deref().or(by_extension) {
        Some("torch") => {}
        Some(f) => {
            return Err(Error::Usage(format!("--format `{f}`: expected torch")));
        }
        None => {
            return Err(Error::Usage(
                "give --format torch (or an output ending in .pt, .pth or .bin)".into(),
            ));
        }
    }
    let model = Model::load(&a.model.model, a.model.arch.as_deref())?;
    let (py, n) = torch::export(&model, &a.out)?;
    writeln!(
        out,
        "wrote {} ({n} tensors, dense) and {} (its torch.nn module)",
        a.out.display(),
        py.display()
    )
    .map_err(|source| Error::Write {
        path: "<stdout>".into(),
        source,
    })?;
    Ok(Outcome::Ok)
}
