//! The `pleas` command line as a library: [`run`] turns raw arguments into validated settings,
//! runs the command and returns the exit code (0 success, 1 a check failed, 2 error). Errors are
//! printed on one line with their cause chain. The binary is a thin wrapper over it.

mod eval;
mod export;
mod inspect;
mod interrupt;
mod merge;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error::{Error, chain};
use crate::io::data::Normalize;

/// Merge two trained neural networks with PLeaS (permutations + least squares).
#[derive(Parser, Debug)]
#[command(name = "pleas", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a model's architecture, permutation groups, FLOPs and parameters.
    Inspect(InspectArgs),
    /// Print a model's accuracy on labelled data.
    Eval(EvalArgs),
    /// Merge two models of one architecture into one of a chosen size.
    Merge(Box<MergeArgs>),
    /// Write a model (original or merged) in a format other runtimes load: ONNX, or a PyTorch
    /// state_dict (block layers dense) with the torch.nn module file that loads it.
    Export(ExportArgs),
}

#[derive(Args, Debug)]
struct ExportArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Output file.
    #[arg(short, long, value_name = "FILE")]
    out: PathBuf,
    /// Output format: onnx or torch; default: from the file extension (.pt, .pth, .bin:
    /// torch), else onnx.
    #[arg(long, value_name = "FORMAT")]
    format: Option<String>,
    /// Block-structured (merged) layers: split (one operator per block after a channel
    /// reorder: the exact multiply-adds) or dense (one operator per layer, zero cross blocks).
    #[arg(long, default_value = "split")]
    blocks: String,
    /// ONNX operator set version (13 to 21).
    #[arg(long, default_value_t = crate::export::onnx::DEFAULT_OPSET, allow_negative_numbers = true)]
    opset: i64,
    /// Print nothing but errors.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct MergeArgs {
    /// Model A (safetensors or a PyTorch checkpoint: .pt / .pth / .bin).
    model_a: PathBuf,
    /// Model B (safetensors or a PyTorch checkpoint), same architecture as A.
    model_b: PathBuf,
    /// Architecture file (TOML) for models no family recognises.
    #[arg(long, value_name = "FILE")]
    arch: Option<PathBuf>,
    /// Merge data (unlabelled): safetensors or .npy.
    #[arg(long, value_name = "FILE")]
    data: PathBuf,
    /// Data tensor in a multi-tensor safetensors file.
    #[arg(long, value_name = "NAME", default_value = "x_match")]
    data_key: String,
    /// Input normalisation (default: the models' metadata `normalize`).
    #[arg(long, value_name = "MAP")]
    normalize: Option<String>,
    /// FLOP budget relative to one model, in [1, 2].
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    budget: f64,
    /// Budget to per-group ratios: uniform, stages or weighted.
    #[arg(long, default_value = "uniform")]
    ratios: String,
    /// Per-group weights for --ratios weighted (TOML or JSON: group name = weight); default:
    /// measured on the merge data.
    #[arg(long, value_name = "FILE")]
    group_weights: Option<PathBuf>,
    /// Activation similarity: neg-l2, inner or correlation.
    #[arg(long, default_value = "neg-l2")]
    metric: String,
    /// Matching: activation, weight (data-free) or identity (naive averaging).
    #[arg(long, default_value = "activation")]
    matching: String,
    /// Relative ridge: lambda = X * mean(diag G) per output block.
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    ridge: Option<f64>,
    /// What the ridge pulls the weights towards: average (the permute-and-average weights) or
    /// zero.
    #[arg(long, default_value = "average")]
    ridge_toward: String,
    /// Batch-norm: fold (into the convs) or keep (averaged, statistics re-estimated).
    #[arg(long, default_value = "fold")]
    bn: String,
    /// Weights: sequential (least squares on the merged network's own inputs), original
    /// (least squares on the original models' inputs, as the paper) or none
    /// (permute-and-average).
    #[arg(long, default_value = "sequential")]
    fit: String,
    /// Same as --fit sequential.
    #[arg(long)]
    sequential: bool,
    /// Heads: auto (two if the models' classes differ), shared or separate.
    #[arg(long, default_value = "auto")]
    heads: String,
    /// Worker threads (default: all cores); results do not depend on it.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Samples per chunk (at most: fewer when one chunk's activations of the three networks
    /// would exceed 1 GiB, e.g. 2 for a ResNet-50 at 224x224).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// MiB of activations kept in memory between passes (the threads' reusable buffers
    /// included) before spilling to a temporary file [default: a quarter of the memory
    /// available (MemAvailable, or the room under the cgroup limit if smaller), shared by
    /// the MPI ranks on the node; at least 128].
    #[arg(long = "memory", value_name = "MIB")]
    memory_mib: Option<usize>,
    /// Evaluate the merged model on this labelled file afterwards (x_test / y_test).
    #[arg(long, value_name = "FILE")]
    eval: Option<PathBuf>,
    /// Data tensor of the --eval file.
    #[arg(long, value_name = "NAME", default_value = "x_test")]
    eval_data_key: String,
    /// Label tensor of the --eval file.
    #[arg(long, value_name = "NAME", default_value = "y_test")]
    eval_label_key: String,
    /// Output directory (merged.safetensors, report.json).
    #[arg(short, long, value_name = "OUT_DIR")]
    out: PathBuf,
    /// Also report each layer's residual on the merged network's own inputs (with --fit
    /// original; one more data pass per layer).
    #[arg(long)]
    diagnose: bool,
    /// Print nothing but errors.
    #[arg(long)]
    quiet: bool,
    /// Print JSON events (one per line) and a final JSON summary.
    #[arg(long)]
    json: bool,
    /// Also write OUT_DIR/merged.onnx (ONNX, block layers split: `pleas export` defaults).
    #[arg(long)]
    onnx: bool,
}

/// Model options shared by commands.
#[derive(Args, Debug)]
struct ModelArgs {
    /// The model: safetensors or a PyTorch checkpoint (torch.save's zip: .pt / .pth / .bin),
    /// PyTorch state_dict names.
    model: PathBuf,
    /// Architecture file (TOML) for a model no family recognises.
    #[arg(long, value_name = "FILE")]
    arch: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct InspectArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Labelled data: safetensors (x_test / y_test) or .npy.
    #[arg(long, value_name = "FILE")]
    data: PathBuf,
    /// Data tensor in a multi-tensor safetensors file.
    #[arg(long, value_name = "NAME", default_value = "x_test")]
    data_key: String,
    /// Label tensor in a multi-tensor safetensors file.
    #[arg(long, value_name = "NAME", default_value = "y_test")]
    label_key: String,
    /// Labels in their own file (needed with .npy data).
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// Input normalisation: `none`, `x/255`, `x/255*2-1` or `MEAN,STD`; default: the model's
    /// metadata `normalize`, else none.
    #[arg(long, value_name = "MAP")]
    normalize: Option<String>,
    /// Samples per forward batch.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Exit with code 1 if the mean accuracy is below this.
    #[arg(long, value_name = "ACC")]
    min_accuracy: Option<f64>,
    /// Also write every head's logits on every sample of the data file to this safetensors
    /// file (one F32 tensor `[samples, classes]` per head, named after it).
    #[arg(long, value_name = "FILE")]
    logits: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What a command concluded, beyond errors.
enum Outcome {
    /// Done, nothing checked or every check passed.
    Ok,
    /// A check failed (exit code 1).
    CheckFailed,
    /// The command failed and why has been printed already (by rank 0 of a multi-process
    /// merge): exit code 2.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    FailedReported,
}

/// `error: ` and the error's cause chain, on one line (written with one call, so that lines of
/// several processes sharing a terminal do not interleave).
fn error_line(e: &Error) -> String {
    format!("error: {}\n", chain(e))
}

fn parse_normalize(s: &str) -> Result<Normalize, Error> {
    Normalize::parse(s).ok_or_else(|| {
        Error::Usage(format!(
            "--normalize `{s}`: expected none, x/255, x/255*2-1 or MEAN,STD"
        ))
    })
}

/// Runs the command line `args` (program name first), writing results to `out` and errors to
/// `err`; returns the process exit code.
pub fn run<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = e.exit_code();
            let text = e.render().to_string();
            let _ = if code == 0 {
                write!(out, "{text}")
            } else {
                write!(err, "{text}")
            };
            return if code == 0 { 0 } else { 2 };
        }
    };
    if let Err(e) = crate::simd_env::select_from_env() {
        let _ = writeln!(err, "error: {}", chain(&e));
        return 2;
    }
    let result = match cli.command {
        Command::Inspect(a) => inspect::run(&a, out),
        Command::Eval(a) => eval::run(&a, out),
        Command::Merge(a) => merge::run(&a, out, err),
        Command::Export(a) => export::run(&a, out),
    };
    match result {
        Ok(Outcome::Ok) => 0,
        Ok(Outcome::CheckFailed) => 1,
        Ok(Outcome::FailedReported) => 2,
        Err(e) => {
            let _ = err.write_all(error_line(&e).as_bytes());
            2
        }
    }
}
