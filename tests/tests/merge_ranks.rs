//! Merges split over several ranks (`pleas::ranks`), without MPI: K ranks run as threads of
//! this process over channels ([`LocalRanks`]), the protocol the MPI build runs over
//! `mpirun -n K`. Every rank must hold the single-process merged weights bit for bit, for any
//! K (fewer ranks than shards, more ranks than shards), on fit passes in both solve forms
//! (normal equations, and kept rows when the pass has fewer rows than columns) and on
//! batch-norm re-estimation passes; and a failure on any rank at any agreement must make every
//! rank fail with that rank's message.

use std::collections::BTreeMap;

use pleas::error::Error;
use pleas::io::data::{DataSpec, Normalize};
use pleas::io::safetensors::{self, Metadata};
use pleas::merge::pipeline::{MergeOutcome, merge, merge_on};
use pleas::merge::settings::{BnMode, FitMode, MergeSettings, RidgeToward};
use pleas::model::Model;
use pleas::ranks::{LocalRanks, Ranks};
use pleas_tests::models::{fashion_eval, fixtures};
use pleas_tests::scratch::TempDir;

const MLP64_A: &str = "fashion/mlp64_split/fashion_mlp_split_m0_s6.safetensors";
const MLP64_B: &str = "fashion/mlp64_split/fashion_mlp_split_m1_s7.safetensors";
const RN20_A: &str = "fashion/rn20w1_split/fashion_resnet20_w1_split_m0_s2.safetensors";
const RN20_B: &str = "fashion/rn20w1_split/fashion_resnet20_w1_split_m1_s3.safetensors";

/// Every `2000 / n`-th image of the fixture merge data, as a file in `dir`.
fn merge_data(dir: &TempDir, n: usize) -> DataSpec {
    let file = safetensors::read(&fashion_eval()).unwrap();
    let all = &file.tensors["x_match"];
    let (total, per) = (all.shape[0], all.bytes.len() / all.shape[0]);
    let mut t = all.clone();
    t.shape[0] = n;
    t.bytes = (0..n)
        .flat_map(|i| {
            let r = i * total / n;
            all.bytes[r * per..(r + 1) * per].to_vec()
        })
        .collect();
    let path = dir.path().join(format!("x_match_{n}.safetensors"));
    let mut tensors = BTreeMap::new();
    tensors.insert("x_match".to_string(), t);
    std::fs::write(&path, safetensors::raw_to_bytes(&tensors, &Metadata::new())).unwrap();
    DataSpec::unlabelled(path, "x_match", Normalize::Symmetric)
}

fn load(rel: &str) -> Model {
    Model::load(&fixtures().join(rel), None).unwrap()
}

/// The merge on `k` thread ranks; `fail`: `(rank, n)` makes that rank fail at its `n`-th
/// agreement. One result per rank, in rank order.
fn on_ranks(
    k: usize,
    a: &Model,
    b: &Model,
    data: &DataSpec,
    settings: &MergeSettings,
    fail: Option<(usize, u64)>,
) -> Vec<Result<MergeOutcome, Error>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = LocalRanks::group(k)
            .into_iter()
            .map(|r| {
                let r = match fail {
                    Some((rank, n)) if rank == r.rank() => r.fail_at(n),
                    _ => r,
                };
                scope.spawn(move || merge_on(a, b, data, settings, &r, &mut |_| {}))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Every merged tensor, as bits.
fn bits(o: &MergeOutcome) -> BTreeMap<String, Vec<u32>> {
    o.weights
        .iter()
        .map(|(k, t)| (k.clone(), t.data().iter().map(|v| v.to_bits()).collect()))
        .collect()
}

fn check_same_on_ranks(
    a: &Model,
    b: &Model,
    data: &DataSpec,
    settings: &MergeSettings,
    ks: &[usize],
) {
    let single = merge(a, b, data, settings, &mut |_| {}).unwrap();
    assert_eq!(single.ranks, 1);
    let want = bits(&single);
    for &k in ks {
        for (rank, r) in on_ranks(k, a, b, data, settings, None)
            .into_iter()
            .enumerate()
        {
            let o = r.unwrap_or_else(|e| panic!("{k} ranks, rank {rank}: {e}"));
            assert_eq!(o.ranks, k);
            assert!(
                bits(&o) == want,
                "{k} ranks, rank {rank}: weights differ from one process"
            );
        }
    }
}

/// The 784-64-64 MLP pair on 300 samples (the first layer's pass keeps its rows: fewer rows
/// than columns) and on 1000 (normal equations), ridge towards zero so every layer is solved.
#[test]
fn mlp_merge_is_the_same_on_any_number_of_ranks() {
    let dir = TempDir::new("merge-ranks", "mlp");
    let (a, b) = (load(MLP64_A), load(MLP64_B));
    let settings = MergeSettings {
        budget: 1.2,
        threads: 1,
        ridge_toward: RidgeToward::Zero,
        ..MergeSettings::default()
    };
    for n in [300, 1000] {
        // 9 ranks: more ranks than shards, some compute nothing.
        check_same_on_ranks(&a, &b, &merge_data(&dir, n), &settings, &[2, 3, 9]);
    }
}

/// ResNet-20 with batch-norm kept and re-estimated (one pass per batch-norm node, over
/// activations that stay on the rank owning their shard), no least squares.
#[test]
fn batchnorm_reestimation_is_the_same_on_any_number_of_ranks() {
    let dir = TempDir::new("merge-ranks", "rn20");
    let (a, b) = (load(RN20_A), load(RN20_B));
    let settings = MergeSettings {
        budget: 1.2,
        threads: 1,
        bn: BnMode::Keep,
        fit: FitMode::Average,
        ..MergeSettings::default()
    };
    check_same_on_ranks(&a, &b, &merge_data(&dir, 64), &settings, &[3]);
}

/// A rank that fails at any agreement (the matching statistics, a fit pass, the end) makes
/// every rank fail with its message; nothing hangs.
#[test]
fn a_failing_rank_fails_every_rank() {
    let dir = TempDir::new("merge-ranks", "fail");
    let (a, b) = (load(MLP64_A), load(MLP64_B));
    let data = merge_data(&dir, 100);
    let settings = MergeSettings {
        budget: 1.2,
        threads: 1,
        ..MergeSettings::default()
    };
    // Agreements of this merge: the matching pass (2: its shards, rank 0's fold), three fit
    // passes (2 each), the end: 9.
    for (failing, at) in [(1, 1), (0, 2), (2, 4), (1, 9), (2, 9)] {
        let results = on_ranks(3, &a, &b, &data, &settings, Some((failing, at)));
        for (rank, r) in results.into_iter().enumerate() {
            match r {
                Err(Error::RankFailed {
                    rank: f,
                    ranks: 3,
                    message,
                }) => {
                    assert_eq!(f, failing, "rank {rank}");
                    assert!(message.contains("injected at agreement"), "{message}");
                }
                Err(e) => panic!("rank {rank}: {e}"),
                Ok(_) => panic!("rank {rank} succeeded though rank {failing} failed at {at}"),
            }
        }
    }
    // One agreement past the last: nobody fails.
    for r in on_ranks(3, &a, &b, &data, &settings, Some((1, 10))) {
        r.unwrap();
    }
}
