//! The `.npy` readers on arbitrary bytes: the in-memory parser, the header-only parser (from
//! the whole file or from its header alone), the file readers and the merge-data readers
//! (`data::load`, `DataSource` in chunks, `load_labels`). None panics; they agree with each
//! other; whatever the parser accepts survives a write-and-read round trip unchanged; data that
//! loads has `n * prod(sample shape)` finite values, the same whichever way it is read.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use pleas::io::data::{DataSource, DataSpec, Normalize, load, load_labels};
use pleas::io::npy::{parse, parse_header, read, read_header, to_bytes};

fn path() -> PathBuf {
    std::env::temp_dir().join(format!("pleas-fuzz-npy-{}.npy", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let parsed = parse(data);
    let header = parse_header(data, len);
    match (&parsed, &header) {
        (Ok(t), Ok(h)) => {
            assert_eq!((&t.shape, t.dtype.clone()), (&h.shape, h.dtype.clone()));
            assert_eq!(h.data_start + h.data_len, len);
            assert_eq!(t.bytes, &data[h.data_start as usize..]);
            // The header alone says the same (the file readers read no further).
            let front = &data[..h.data_start as usize];
            assert_eq!(parse_header(front, len).as_ref(), Ok(h));
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("parse and parse_header disagree: {parsed:?} vs {header:?}"),
    }
    if let Ok(t) = &parsed {
        let again = parse(&to_bytes(t)).expect("our own output parses");
        assert_eq!(again.shape, t.shape);
        assert_eq!(again.dtype, t.dtype);
        assert_eq!(again.bytes, t.bytes);
    }

    let path = path();
    std::fs::write(&path, data).expect("temp file");
    match (read_header(&path), &header) {
        (Ok((_, h)), Ok(want)) => assert_eq!(&h, want),
        (Err(e), Err(_)) => {
            let _ = pleas::error::chain(&e);
        }
        (got, want) => panic!("read_header disagrees: {got:?} vs {want:?}"),
    }
    assert_eq!(read(&path).is_ok(), parsed.is_ok());
    let spec = DataSpec {
        path: path.clone(),
        data_key: "x".into(),
        label_key: None,
        labels_path: None,
        normalize: Normalize::Identity,
    };
    match load(&spec) {
        Ok(set) => {
            let t = parsed.as_ref().expect("loaded data parses");
            assert_eq!(Some(&set.n), t.shape.first());
            assert_eq!(set.sample_shape, t.shape[1..]);
            assert_eq!(set.x.len(), set.n * set.sample_len());
            assert!(set.x.iter().all(|v| v.is_finite()));
            // In chunks of up to three samples, through one source.
            let mut source = DataSource::open(&spec).expect("opens what loads");
            let per = source.sample_len();
            // No samples: nothing to read, and `per` alone (from the header) may be huge.
            let mut out = vec![f32::NAN; if set.n > 0 { 3 * per } else { 0 }];
            let mut start = 0;
            while start < set.n {
                let count = (set.n - start).min(1 + start % 3);
                source
                    .read(start, count, &mut out)
                    .expect("reads what loads");
                assert_eq!(
                    out[..count * per]
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>(),
                    set.x[start * per..(start + count) * per]
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>()
                );
                start += count;
            }
            assert!(source.read(set.n, 1, &mut out).is_err());
        }
        Err(e) => {
            let _ = pleas::error::chain(&e);
        }
    }
    // The same file as labels, one per element.
    if let Ok(t) = &parsed {
        let numel = t.bytes.len() / t.dtype.size().expect("a known dtype");
        match load_labels(&path, "y", numel) {
            Ok(labels) => assert_eq!(labels.len(), numel),
            Err(e) => {
                let _ = pleas::error::chain(&e);
            }
        }
    }
    let _ = std::fs::remove_file(&path);
});
