//! What the ranks send each other: a pass's accumulators as bytes, exactly (every float by
//! its bits), so a value decoded on another rank behaves bit for bit like the one encoded.
//!
//! Little-endian, no framing beyond the lengths each value writes; [`Wire::decode`] checks that
//! the bytes hold exactly one value.

use pleas_core::gram::{GramParams, GramState};

use crate::error::Error;
use crate::merge::stream::{ChannelMoments, FitRows, PassResult};
use crate::par::OwnedGram;

/// A value that crosses between ranks.
pub trait Wire: Sized {
    /// Appends the value to `out`.
    fn encode(self, out: &mut Vec<u8>);
    /// Reads one value.
    fn read(r: &mut Reader<'_>) -> Result<Self, Error>;
    /// The value `bytes` hold (nothing left over).
    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader { bytes, at: 0 };
        let v = Self::read(&mut r)?;
        if r.at != bytes.len() {
            return Err(malformed(format!(
                "{} bytes left over after the value",
                bytes.len() - r.at
            )));
        }
        Ok(v)
    }
}

fn malformed(reason: String) -> Error {
    Error::RankMessage { reason }
}

/// Reads little-endian values from a message.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let end = self.at.checked_add(N).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| malformed(format!("truncated at byte {}", self.at)))?;
        let mut b = [0u8; N];
        b.copy_from_slice(&self.bytes[self.at..end]);
        self.at = end;
        Ok(b)
    }

    fn u64(&mut self) -> Result<u64, Error> {
        self.take::<8>().map(u64::from_le_bytes)
    }

    fn len(&mut self) -> Result<usize, Error> {
        let n = self.u64()?;
        let left = (self.bytes.len() - self.at) as u64;
        // Every element takes at least 4 bytes: a longer length cannot be genuine.
        if n > left / 4 {
            return Err(malformed(format!("length {n} beyond the message")));
        }
        Ok(n as usize)
    }

    fn f64s(&mut self) -> Result<Vec<f64>, Error> {
        let n = self.len()?;
        (0..n)
            .map(|_| self.take::<8>().map(f64::from_le_bytes))
            .collect()
    }

    fn f32s(&mut self) -> Result<Vec<f32>, Error> {
        let n = self.len()?;
        (0..n)
            .map(|_| self.take::<4>().map(f32::from_le_bytes))
            .collect()
    }
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_f64s(out: &mut Vec<u8>, v: &[f64]) {
    put_u64(out, v.len() as u64);
    out.reserve(v.len() * 8);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

fn put_f32s(out: &mut Vec<u8>, v: &[f32]) {
    put_u64(out, v.len() as u64);
    out.reserve(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// The accumulator after a flush: its shape and parameters, counters, shifts and f64 totals
/// (the f32 block products are empty after a flush and are not sent).
impl Wire for OwnedGram {
    fn encode(mut self, out: &mut Vec<u8>) {
        self.flush();
        let (dim, targets, params, state) =
            (self.dim(), self.targets(), self.params(), self.state());
        put_u64(out, dim as u64);
        put_u64(out, targets as u64);
        put_u64(out, params.block_samples as u64);
        put_u64(out, u64::from(params.gram));
        put_u64(out, state.folded);
        put_u64(out, u64::from(state.shift_set));
        put_f32s(out, self.x_shift());
        put_f32s(out, self.t_shift());
        let len = OwnedGram::storage_len_for(dim, targets, params);
        let (storage, _) = self.into_buffers();
        put_f64s(out, &storage[..len]);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        let dim = r.u64()? as usize;
        let targets = r.u64()? as usize;
        let block = r.u64()? as usize;
        let gram = r.u64()? != 0;
        let folded = r.u64()?;
        let shift_set = r.u64()? != 0;
        let (xs, ts) = (r.f32s()?, r.f32s()?);
        let totals = r.f64s()?;
        let mut params = GramParams::with_block_samples(block);
        if !gram {
            params = params.without_gram();
        }
        let len = OwnedGram::storage_len_for(dim, targets, params);
        if totals.len() != len || xs.len() != dim || ts.len() != targets {
            return Err(malformed(format!(
                "an accumulator of {dim} x {targets} with {} totals and shifts of {} and {}",
                totals.len(),
                xs.len(),
                ts.len()
            )));
        }
        let gram_err = |e| Error::core_at("message between ranks", "an accumulator", e);
        let mut acc = OwnedGram::new_owned(dim, targets, params);
        if shift_set {
            acc.set_shift(&xs, &ts).map_err(gram_err)?;
        }
        let (mut storage, workspace) = acc.into_buffers();
        storage[..len].copy_from_slice(&totals);
        let state = GramState::new(folded, 0, shift_set);
        OwnedGram::resume(dim, targets, params, storage, workspace, state).map_err(gram_err)
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn encode(self, out: &mut Vec<u8>) {
        put_u64(out, self.len() as u64);
        for v in self {
            v.encode(out);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        let n = r.len()?;
        (0..n).map(|_| T::read(r)).collect()
    }
}

impl Wire for ChannelMoments {
    fn encode(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.count.to_le_bytes());
        put_f64s(out, &self.mean);
        put_f64s(out, &self.m2);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        let count = f64::from_le_bytes(r.take::<8>()?);
        let (mean, m2) = (r.f64s()?, r.f64s()?);
        Ok(ChannelMoments { count, mean, m2 })
    }
}

impl Wire for PassResult {
    fn encode(self, out: &mut Vec<u8>) {
        match self {
            PassResult::Fit(acc, rows) => {
                put_u64(out, 0);
                acc.encode(out);
                match rows {
                    None => put_u64(out, 0),
                    Some(rows) => {
                        put_u64(out, 1);
                        put_f32s(out, &rows.x);
                        put_f32s(out, &rows.t);
                    }
                }
            }
            PassResult::BatchNorm(m) => {
                put_u64(out, 1);
                m.encode(out);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        match r.u64()? {
            0 => {
                let acc = OwnedGram::read(r)?;
                let rows = match r.u64()? {
                    0 => None,
                    1 => Some(Box::new(FitRows {
                        x: r.f32s()?,
                        t: r.f32s()?,
                    })),
                    k => return Err(malformed(format!("kept-rows flag {k}"))),
                };
                Ok(PassResult::Fit(acc, rows))
            }
            1 => Ok(PassResult::BatchNorm(ChannelMoments::read(r)?)),
            k => Err(malformed(format!("pass result kind {k}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use pleas_core::linalg::{MatMut, MatRef};

    use super::*;

    fn sample(n: usize, d: usize, seed: u32) -> Vec<f32> {
        (0..n * d)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.3)
            .collect()
    }

    fn gram(n: usize, d: usize, t: usize, seed: u32, params: GramParams) -> OwnedGram {
        let mut acc = OwnedGram::new_owned(d, t, params);
        let (x, y) = (sample(n, d, seed), sample(n, t, seed ^ 77));
        let (xv, tv) = (
            MatRef::new(&x, n, d).unwrap(),
            MatRef::new(&y, n, t).unwrap(),
        );
        acc.push(xv, Some(tv)).unwrap();
        acc
    }

    /// Everything readable from an accumulator, as bits.
    fn bits(mut acc: OwnedGram) -> Vec<u64> {
        let (d, t) = (acc.dim(), acc.targets());
        let mut out = vec![acc.count()];
        let mut g = vec![0.0; d * d];
        if acc.params().gram {
            acc.write_gram(MatMut::new(&mut g, d, d).unwrap()).unwrap();
        }
        let mut r = vec![0.0; d * t];
        acc.write_cross(MatMut::new(&mut r, d, t).unwrap()).unwrap();
        let (mut sx, mut st, mut tt) = (vec![0.0; d], vec![0.0; t], vec![0.0; t]);
        acc.write_sum_x(&mut sx).unwrap();
        acc.write_sum_t(&mut st).unwrap();
        acc.write_sum_tt(&mut tt).unwrap();
        for v in [g, r, sx, st, tt] {
            out.extend(v.iter().map(|x| x.to_bits()));
        }
        out.extend(acc.x_shift().iter().map(|x| u64::from(x.to_bits())));
        out
    }

    fn roundtrip<T: Wire>(v: T) -> T {
        let mut bytes = Vec::new();
        v.encode(&mut bytes);
        T::decode(&bytes).unwrap()
    }

    #[test]
    fn accumulators_cross_exactly_and_combine_alike() {
        for params in [
            GramParams::with_block_samples(8),
            GramParams::with_block_samples(8).without_gram(),
        ] {
            // 13 samples: one pending partial block; an empty accumulator too.
            for n in [0, 13, 16] {
                assert_eq!(
                    bits(roundtrip(gram(n, 5, 3, 1, params))),
                    bits(gram(n, 5, 3, 1, params))
                );
                // A decoded accumulator combines exactly like the original, both ways.
                let (mut a, mut b) = (gram(n, 5, 3, 1, params), gram(11, 5, 3, 2, params));
                a.combine(&mut b).unwrap();
                let mut c = roundtrip(gram(n, 5, 3, 1, params));
                c.combine(&mut roundtrip(gram(11, 5, 3, 2, params)))
                    .unwrap();
                assert_eq!(bits(a), bits(c));
            }
        }
    }

    #[test]
    fn pass_results_cross_exactly() {
        let rows = FitRows {
            x: vec![1.0, -0.0, f32::MIN_POSITIVE],
            t: vec![3.5],
        };
        let fit = PassResult::Fit(
            gram(9, 3, 1, 5, GramParams::default()),
            Some(Box::new(rows)),
        );
        let PassResult::Fit(acc, Some(rows)) = roundtrip(fit) else {
            panic!("not a fit with rows");
        };
        assert_eq!(bits(acc), bits(gram(9, 3, 1, 5, GramParams::default())));
        assert_eq!(
            rows.x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            [
                1.0f32.to_bits(),
                (-0.0f32).to_bits(),
                f32::MIN_POSITIVE.to_bits()
            ]
        );
        let m = ChannelMoments {
            count: 12.0,
            mean: vec![0.1, -0.0],
            m2: vec![f64::MIN_POSITIVE, 2.5],
        };
        let PassResult::BatchNorm(back) = roundtrip(PassResult::BatchNorm(m.clone())) else {
            panic!("not batch-norm moments");
        };
        assert_eq!(back.count.to_bits(), m.count.to_bits());
        assert_eq!(
            back.mean
                .iter()
                .chain(&back.m2)
                .map(|v| v.to_bits())
                .collect::<Vec<_>>(),
            m.mean
                .iter()
                .chain(&m.m2)
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        let mut bytes = Vec::new();
        vec![gram(4, 2, 1, 3, GramParams::default())].encode(&mut bytes);
        for cut in [0, 7, 8, 30, bytes.len() - 1] {
            assert!(matches!(
                Vec::<OwnedGram>::decode(&bytes[..cut]),
                Err(Error::RankMessage { .. })
            ));
        }
        bytes.push(0);
        assert!(Vec::<OwnedGram>::decode(&bytes).is_err());
        assert!(PassResult::decode(&7u64.to_le_bytes()).is_err());
    }
}
