//! What to ask a Modbus device for, and how to read the answer: batches points of adjacent or
//! overlapping addresses of one register kind into as few requests as the protocol allows, and
//! turns registers (u16/i16/u32/i32/f32, either word order) or bits into scaled values. No I/O.

use crate::config::{DataType, ModbusPoint, RegisterKind, WordOrder};

/// Most registers one read request may ask for (function 3 and 4).
pub const MAX_REGISTERS: u16 = 125;
/// Most bits one read request may ask for (function 1 and 2).
pub const MAX_BITS: u16 = 2000;

/// A point served by a read: its index in the device's point list, and where its first
/// register (or bit) sits in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub point: usize,
    pub offset: u16,
}

/// One read request and the points it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub kind: RegisterKind,
    pub start: u16,
    pub count: u16,
    pub slots: Vec<Slot>,
}

impl Read {
    /// For logs: `holding 100..=109`.
    pub fn describe(&self) -> String {
        format!(
            "{} {}..={}",
            self.kind.as_str(),
            self.start,
            u32::from(self.start) + u32::from(self.count) - 1
        )
    }
}

/// Groups `points` into reads: same register kind, addresses touching or overlapping, within the
/// per-request limit. Every point lands in exactly one read.
pub fn plan(points: &[ModbusPoint]) -> Vec<Read> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (points[i].register, points[i].address, i));
    let mut reads: Vec<Read> = Vec::new();
    for i in order {
        let p = &points[i];
        let start = u32::from(p.address);
        let end = start + u32::from(p.data_type().width()); // exclusive
        let limit = u32::from(if p.register.is_bit() {
            MAX_BITS
        } else {
            MAX_REGISTERS
        });
        if let Some(r) = reads.last_mut() {
            let r_start = u32::from(r.start);
            let r_end = r_start + u32::from(r.count);
            let new_end = end.max(r_end);
            if r.kind == p.register && start <= r_end && new_end - r_start <= limit {
                r.count = (new_end - r_start) as u16;
                r.slots.push(Slot {
                    point: i,
                    offset: (start - r_start) as u16,
                });
                continue;
            }
        }
        reads.push(Read {
            kind: p.register,
            start: p.address,
            count: p.data_type().width(),
            slots: vec![Slot {
                point: i,
                offset: 0,
            }],
        });
    }
    reads
}

/// Why a point's value could not be taken from a response.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("response too short: {got} of {want} values")]
    Short { got: usize, want: usize },
    #[error("value is not a finite number ({0})")]
    NotFinite(f64),
}

/// The raw (unscaled) value of a `ty` starting at `words[0]`.
pub fn raw_from_words(words: &[u16], ty: DataType, order: WordOrder) -> Result<f64, ValueError> {
    let need = usize::from(ty.width());
    let short = || ValueError::Short {
        got: words.len(),
        want: need,
    };
    let w = words.get(..need).ok_or_else(short)?;
    let u32_of = |hi: u16, lo: u16| (u32::from(hi) << 16) | u32::from(lo);
    let wide = || match order {
        WordOrder::Big => u32_of(w[0], w[1]),
        WordOrder::Little => u32_of(w[1], w[0]),
    };
    let v = match ty {
        DataType::U16 => f64::from(w[0]),
        DataType::I16 => f64::from(w[0] as i16),
        DataType::Bool => f64::from(u8::from(w[0] != 0)),
        DataType::U32 => f64::from(wide()),
        DataType::I32 => f64::from(wide() as i32),
        DataType::F32 => f64::from(f32::from_bits(wide())),
    };
    if v.is_finite() {
        Ok(v)
    } else {
        Err(ValueError::NotFinite(v))
    }
}

/// Scaled value of `point` from a register response that starts at the read's first address.
pub fn value_from_registers(
    point: &ModbusPoint,
    offset: u16,
    words: &[u16],
) -> Result<f64, ValueError> {
    let at = words.get(usize::from(offset)..).unwrap_or_default();
    let raw = raw_from_words(at, point.data_type(), point.word_order).map_err(|e| match e {
        ValueError::Short { .. } => ValueError::Short {
            got: words.len(),
            want: usize::from(offset) + usize::from(point.data_type().width()),
        },
        e => e,
    })?;
    scaled(point, raw)
}

/// Scaled value of `point` (a coil or discrete input) from a bit response.
pub fn value_from_bits(point: &ModbusPoint, offset: u16, bits: &[bool]) -> Result<f64, ValueError> {
    let bit = bits.get(usize::from(offset)).ok_or(ValueError::Short {
        got: bits.len(),
        want: usize::from(offset) + 1,
    })?;
    scaled(point, f64::from(u8::from(*bit)))
}

fn scaled(point: &ModbusPoint, raw: f64) -> Result<f64, ValueError> {
    let v = raw * point.scale + point.offset;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(ValueError::NotFinite(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(metric: &str, register: RegisterKind, address: u16, ty: Option<DataType>) -> ModbusPoint {
        ModbusPoint {
            metric: metric.into(),
            register,
            address,
            data_type: ty,
            word_order: WordOrder::Big,
            scale: 1.0,
            offset: 0.0,
        }
    }

    /// A read as (kind, start, count, [(point, offset)]).
    type Shape = (RegisterKind, u16, u16, Vec<(usize, u16)>);

    fn shape(reads: &[Read]) -> Vec<Shape> {
        reads
            .iter()
            .map(|r| {
                (
                    r.kind,
                    r.start,
                    r.count,
                    r.slots.iter().map(|s| (s.point, s.offset)).collect(),
                )
            })
            .collect()
    }

    use DataType::*;
    use RegisterKind::*;

    #[test]
    fn adjacent_registers_become_one_read() {
        let points = [
            pt("c", Holding, 3, Some(F32)),
            pt("a", Holding, 0, None),
            pt("b", Holding, 1, Some(I32)),
            pt("far", Holding, 10, None),
        ];
        assert_eq!(
            shape(&plan(&points)),
            vec![
                (Holding, 0, 5, vec![(1, 0), (2, 1), (0, 3)]),
                (Holding, 10, 1, vec![(3, 0)]),
            ]
        );
    }

    #[test]
    fn kinds_are_never_mixed_and_overlaps_share_a_read() {
        let points = [
            pt("in", Input, 0, None),
            pt("hold", Holding, 0, None),
            pt("hold_wide", Holding, 0, Some(U32)),
            pt("coil0", Coil, 0, None),
            pt("coil1", Coil, 1, None),
            pt("di", Discrete, 7, None),
        ];
        assert_eq!(
            shape(&plan(&points)),
            vec![
                (Holding, 0, 2, vec![(1, 0), (2, 0)]),
                (Input, 0, 1, vec![(0, 0)]),
                (Coil, 0, 2, vec![(3, 0), (4, 1)]),
                (Discrete, 7, 1, vec![(5, 0)]),
            ]
        );
    }

    #[test]
    fn a_read_never_exceeds_the_protocol_limit() {
        let points: Vec<ModbusPoint> = (0..130)
            .map(|i| pt(&format!("r{i}"), Input, i * 2, Some(F32)))
            .collect();
        let reads = plan(&points);
        assert!(
            reads.iter().all(|r| r.count <= MAX_REGISTERS),
            "{:?}",
            shape(&reads)
        );
        assert_eq!(reads.iter().map(|r| r.slots.len()).sum::<usize>(), 130);
        assert_eq!(
            (reads[0].start, reads[0].count),
            (0, 124),
            "62 f32 fit, a 63rd would need 126"
        );
        assert_eq!(reads.len(), 3);
        let coils: Vec<ModbusPoint> = (0..2500)
            .map(|i| pt(&format!("c{i}"), Coil, i, None))
            .collect();
        let reads = plan(&coils);
        assert_eq!(
            shape(&reads).iter().map(|r| (r.1, r.2)).collect::<Vec<_>>(),
            [(0, 2000), (2000, 500)]
        );
    }

    #[test]
    fn the_last_address_is_reachable() {
        let reads = plan(&[pt("top", Holding, 65534, Some(U32))]);
        assert_eq!((reads[0].start, reads[0].count), (65534, 2));
        assert_eq!(reads[0].describe(), "holding 65534..=65535");
    }

    #[test]
    fn words_decode_by_type_and_word_order() {
        let f = 12.5f32.to_bits();
        let (hi, lo) = ((f >> 16) as u16, f as u16);
        assert_eq!(raw_from_words(&[hi, lo], F32, WordOrder::Big), Ok(12.5));
        assert_eq!(raw_from_words(&[lo, hi], F32, WordOrder::Little), Ok(12.5));
        assert_eq!(raw_from_words(&[0xFFFF], I16, WordOrder::Big), Ok(-1.0));
        assert_eq!(raw_from_words(&[0xFFFF], U16, WordOrder::Big), Ok(65535.0));
        assert_eq!(
            raw_from_words(&[0x0001, 0x0002], U32, WordOrder::Big),
            Ok(65538.0)
        );
        assert_eq!(
            raw_from_words(&[0x0002, 0x0001], U32, WordOrder::Little),
            Ok(65538.0)
        );
        assert_eq!(
            raw_from_words(&[0xFFFF, 0xFFFE], I32, WordOrder::Big),
            Ok(-2.0)
        );
        assert_eq!(
            raw_from_words(&[0xFFFE, 0xFFFF], I32, WordOrder::Little),
            Ok(-2.0)
        );
        assert_eq!(
            raw_from_words(&[1], U32, WordOrder::Big),
            Err(ValueError::Short { got: 1, want: 2 })
        );
        let nan = f32::NAN.to_bits();
        assert!(matches!(
            raw_from_words(&[(nan >> 16) as u16, nan as u16], F32, WordOrder::Big),
            Err(ValueError::NotFinite(_))
        ));
    }

    #[test]
    fn values_are_scaled_and_located_by_offset() {
        let mut p = pt("v", Holding, 11, Some(I16));
        p.scale = 0.1;
        p.offset = -40.0;
        // The read starts at 10: the point is the second word.
        let v = value_from_registers(&p, 1, &[7, (-25i16) as u16]).expect("value");
        assert!((v - (-42.5)).abs() < 1e-9, "{v}");
        assert_eq!(
            value_from_registers(&p, 2, &[7, 8]),
            Err(ValueError::Short { got: 2, want: 3 })
        );
        let c = pt("c", Coil, 3, None);
        assert_eq!(value_from_bits(&c, 1, &[false, true]), Ok(1.0));
        assert_eq!(value_from_bits(&c, 0, &[false, true]), Ok(0.0));
        assert!(value_from_bits(&c, 2, &[false, true]).is_err());
    }
}
