//! A restricted unpickler for `data.pkl` (pickle protocols 2 to 5, the binary opcodes PyTorch
//! emits).
//!
//! It builds plain data only: every object is an [`Obj`] in an arena, and the stack and memo
//! hold arena ids, so shared objects stay shared (and a memo reference costs one id, never a
//! deep copy). A global is resolved when it is named (`GLOBAL` / `STACK_GLOBAL`) against a fixed
//! list, [`Global::resolve`]: tensor rebuild functions, storage types, `collections.OrderedDict`,
//! `torch.Size` and `_codecs.encode` (how protocol 2 writes bytes), which is what
//! `torch.load(weights_only=True)` accepts for a state_dict. Any other global is an error naming
//! it, before anything is built. A "call" (`REDUCE` / `NEWOBJ`) of an accepted global is
//! interpreted here by a fixed rule per global; nothing is ever executed.
//!
//! Limits against hostile input: the stack, the memo and the mark stack are bounded, the arena
//! grows by at most one object per opcode, and every length is checked against the bytes left.

use std::collections::HashMap;

use super::TorchError;
use crate::io::safetensors::Dtype;

/// Index of an object in the arena.
pub type ObjId = usize;

/// Most values on the stack at once.
pub const MAX_STACK: usize = 1 << 20;
/// Most memo entries.
pub const MAX_MEMO: usize = 1 << 20;
/// Most open marks.
pub const MAX_MARKS: usize = 1 << 16;
/// Most dimensions of a tensor.
pub const MAX_DIMS: usize = 64;
/// Bound on the items all calls (`REDUCE`) may copy together, relative to the pickle's length:
/// a call copies its arguments' items, and a pickle could otherwise call the same large
/// argument again and again (quadratic memory from linear input).
pub const CALL_WORK_FACTOR: usize = 4;

/// A storage class named in the pickle (`torch.FloatStorage`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageType {
    /// `torch.FloatStorage` (f32).
    Float,
    /// `torch.HalfStorage` (f16).
    Half,
    /// `torch.BFloat16Storage`.
    BFloat16,
    /// `torch.DoubleStorage` (f64).
    Double,
    /// `torch.LongStorage` (i64).
    Long,
    /// `torch.IntStorage` (i32).
    Int,
    /// `torch.ShortStorage` (i16).
    Short,
    /// `torch.CharStorage` (i8).
    Char,
    /// `torch.ByteStorage` (u8).
    Byte,
    /// `torch.BoolStorage`.
    Bool,
    /// `torch.UntypedStorage` (bytes).
    Untyped,
}

impl StorageType {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::Float,
            "HalfStorage" => Self::Half,
            "BFloat16Storage" => Self::BFloat16,
            "DoubleStorage" => Self::Double,
            "LongStorage" => Self::Long,
            "IntStorage" => Self::Int,
            "ShortStorage" => Self::Short,
            "CharStorage" => Self::Char,
            "ByteStorage" => Self::Byte,
            "BoolStorage" => Self::Bool,
            "UntypedStorage" => Self::Untyped,
            _ => return None,
        })
    }

    /// The element type, as the safetensors reader names it.
    pub fn dtype(self) -> Dtype {
        match self {
            Self::Float => Dtype::F32,
            Self::Half => Dtype::F16,
            Self::BFloat16 => Dtype::BF16,
            Self::Double => Dtype::F64,
            Self::Long => Dtype::I64,
            Self::Int => Dtype::I32,
            Self::Short => Dtype::I16,
            Self::Char => Dtype::I8,
            Self::Byte | Self::Untyped => Dtype::U8,
            Self::Bool => Dtype::Other("BOOL".into()),
        }
    }
}

/// A global the reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    /// `collections.OrderedDict`: called with `()` or a list of pairs, makes a dict.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[,
    /// metadata])`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor(storage, offset, size, stride)`.
    RebuildTensor,
    /// `torch._utils._rebuild_parameter(tensor, requires_grad, hooks)`: the tensor.
    RebuildParameter,
    /// `torch._utils._rebuild_parameter_with_state(tensor, requires_grad, hooks, state)`.
    RebuildParameterWithState,
    /// `torch.Size(tuple)`: the tuple.
    TorchSize,
    /// `_codecs.encode(text, "latin1")`: bytes (protocol 2's encoding of `bytes`).
    CodecsEncode,
    /// A storage class; appears only inside a storage's persistent id.
    Storage(StorageType),
}

impl Global {
    /// The accepted global `module.name`, or the error naming it.
    pub fn resolve(module: &str, name: &str) -> Result<Global, TorchError> {
        let g = match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
            ("torch", "Size") => Global::TorchSize,
            ("_codecs", "encode") => Global::CodecsEncode,
            ("torch", s) if StorageType::from_name(s).is_some() => {
                Global::Storage(StorageType::from_name(s).expect("checked"))
            }
            _ => {
                return Err(TorchError::ForbiddenGlobal {
                    module: module.to_string(),
                    name: name.to_string(),
                });
            }
        };
        Ok(g)
    }
}

/// A storage as its persistent id names it: `('storage', type, key, location, numel)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    /// Its class (element type).
    pub kind: StorageType,
    /// Its record name under `data/`.
    pub key: String,
    /// Elements of its type.
    pub numel: u64,
}

/// A tensor: a strided view of a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorView {
    /// The storage it views.
    pub storage: StorageRef,
    /// First element, in storage elements.
    pub offset: u64,
    /// Shape.
    pub size: Vec<u64>,
    /// Stride of each axis, in storage elements.
    pub stride: Vec<u64>,
}

/// An unpickled object.
#[derive(Debug, Clone, PartialEq)]
pub enum Obj {
    /// `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An integer that fits i64.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// Bytes (or a bytearray).
    Bytes(Vec<u8>),
    /// A list (or a set).
    List(Vec<ObjId>),
    /// A tuple.
    Tuple(Vec<ObjId>),
    /// A dict or OrderedDict: pairs in insertion order (a repeated key: the last pair wins).
    Dict(Vec<(ObjId, ObjId)>),
    /// An accepted global, not yet called.
    Global(Global),
    /// A storage (from a persistent id).
    Storage(StorageRef),
    /// A tensor.
    Tensor(TensorView),
}

/// The result of unpickling: the arena and the root object.
#[derive(Debug, Clone)]
pub struct Unpickled {
    objs: Vec<Obj>,
    /// The object `STOP` returned.
    pub root: ObjId,
}

impl Unpickled {
    /// The object `id`.
    pub fn get(&self, id: ObjId) -> &Obj {
        &self.objs[id]
    }
}

/// Unpickles `data` (the bytes of `data.pkl`).
pub fn unpickle(data: &[u8]) -> Result<Unpickled, TorchError> {
    let mut m = Machine {
        data,
        pos: 0,
        op_start: 0,
        objs: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        work_left: CALL_WORK_FACTOR
            .saturating_mul(data.len())
            .saturating_add(1 << 16),
    };
    loop {
        m.op_start = m.pos;
        let op = m.byte()?;
        if op == b'.' {
            let root = m.pop()?;
            return Ok(Unpickled { objs: m.objs, root });
        }
        m.step(op)?;
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    op_start: usize,
    objs: Vec<Obj>,
    stack: Vec<ObjId>,
    marks: Vec<usize>,
    memo: HashMap<u64, ObjId>,
    /// Items calls may still copy (see [`CALL_WORK_FACTOR`]).
    work_left: usize,
}

impl<'a> Machine<'a> {
    fn err(&self, reason: impl Into<String>) -> TorchError {
        TorchError::Pickle {
            offset: self.op_start,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], TorchError> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(self.err(format!("truncated: needs {n} bytes, {left} are left")));
        }
        let data = self.data;
        let s = &data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, TorchError> {
        Ok(self.take(1)?[0])
    }

    fn uint(&mut self, n: usize) -> Result<u64, TorchError> {
        let b = self.take(n as u64)?;
        Ok(b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
    }

    fn line(&mut self) -> Result<String, TorchError> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.err("truncated: a GLOBAL line has no newline"));
        };
        let s = std::str::from_utf8(&rest[..n])
            .map_err(|_| self.err("a GLOBAL line is not UTF-8"))?
            .to_string();
        self.pos += n + 1;
        Ok(s)
    }

    fn new_obj(&mut self, o: Obj) -> ObjId {
        self.objs.push(o);
        self.objs.len() - 1
    }

    fn push_id(&mut self, id: ObjId) -> Result<(), TorchError> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err(format!("more than {MAX_STACK} values on the stack")));
        }
        self.stack.push(id);
        Ok(())
    }

    fn push(&mut self, o: Obj) -> Result<(), TorchError> {
        let id = self.new_obj(o);
        self.push_id(id)
    }

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<ObjId, TorchError> {
        if self.stack.len() <= self.floor() {
            return Err(self.err("stack underflow"));
        }
        Ok(self.stack.pop().expect("checked"))
    }

    fn top(&self) -> Result<ObjId, TorchError> {
        match self.stack.last() {
            Some(&id) if self.stack.len() > self.floor() => Ok(id),
            _ => Err(self.err("stack underflow")),
        }
    }

    /// Pops everything above the last mark, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<ObjId>, TorchError> {
        let Some(m) = self.marks.pop() else {
            return Err(self.err("no MARK to pop to"));
        };
        Ok(self.stack.split_off(m))
    }

    fn str_of(&self, id: ObjId) -> Option<&str> {
        match &self.objs[id] {
            Obj::Str(s) => Some(s),
            _ => None,
        }
    }

    fn step(&mut self, op: u8) -> Result<(), TorchError> {
        match op {
            0x80 => {
                let p = self.byte()?;
                if !(2..=5).contains(&p) {
                    return Err(self.err(format!("pickle protocol {p}, expected 2 to 5")));
                }
            }
            0x95 => {
                self.take(8)?;
            }
            b'(' => {
                if self.marks.len() >= MAX_MARKS {
                    return Err(self.err(format!("more than {MAX_MARKS} open MARKs")));
                }
                self.marks.push(self.stack.len());
            }
            b'0' => {
                if self.stack.len() == self.floor() && !self.marks.is_empty() {
                    self.pop_mark()?;
                } else {
                    self.pop()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let t = self.top()?;
                self.push_id(t)?;
            }
            _ => return self.step_value(op),
        }
        Ok(())
    }

    fn step_value(&mut self, op: u8) -> Result<(), TorchError> {
        let o = match op {
            b'N' => Obj::None,
            0x88 => Obj::Bool(true),
            0x89 => Obj::Bool(false),
            b'J' => Obj::Int(i64::from(self.uint(4)? as u32 as i32)),
            b'K' => Obj::Int(self.uint(1)? as i64),
            b'M' => Obj::Int(self.uint(2)? as i64),
            0x8a => {
                let n = self.uint(1)?;
                self.long(n)?
            }
            0x8b => {
                let n = self.uint(4)?;
                self.long(n)?
            }
            b'G' => Obj::Float(f64::from_be_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            )),
            b'X' | 0x8c | 0x8d => {
                let n = self.uint(len_bytes(op))?;
                let b = self.take(n)?;
                let s = std::str::from_utf8(b).map_err(|_| self.err("a string is not UTF-8"))?;
                Obj::Str(s.to_string())
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                let n = self.uint(len_bytes(op))?;
                Obj::Bytes(self.take(n)?.to_vec())
            }
            _ => return self.step_container(op),
        };
        self.push(o)
    }

    /// A LONG1 / LONG4 integer of `n` little-endian two's-complement bytes.
    fn long(&mut self, n: u64) -> Result<Obj, TorchError> {
        if n > 8 {
            return Err(self.err(format!("a {n}-byte integer does not fit 64 bits")));
        }
        let b = self.take(n)?;
        let Some(&last) = b.last() else {
            return Ok(Obj::Int(0));
        };
        let fill = if last & 0x80 != 0 { 0xff } else { 0 };
        let mut full = [fill; 8];
        full[..b.len()].copy_from_slice(b);
        Ok(Obj::Int(i64::from_le_bytes(full)))
    }

    fn step_container(&mut self, op: u8) -> Result<(), TorchError> {
        match op {
            b']' | 0x8f => self.push(Obj::List(Vec::new())),
            b')' => self.push(Obj::Tuple(Vec::new())),
            b'}' => self.push(Obj::Dict(Vec::new())),
            b'l' | 0x91 => {
                let items = self.pop_mark()?;
                self.push(Obj::List(items))
            }
            b't' => {
                let items = self.pop_mark()?;
                self.push(Obj::Tuple(items))
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if self.stack.len() < self.floor() + n {
                    return Err(self.err("stack underflow"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Obj::Tuple(items))
            }
            b'd' => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                self.push(Obj::Dict(pairs))
            }
            b'a' => {
                let v = self.pop()?;
                self.extend(vec![v])
            }
            b'e' | 0x90 => {
                let items = self.pop_mark()?;
                self.extend(items)
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![(k, v)])
            }
            b'u' => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                self.set_items(pairs)
            }
            _ => self.step_memo(op),
        }
    }

    fn pairs(&self, items: Vec<ObjId>) -> Result<Vec<(ObjId, ObjId)>, TorchError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("an odd number of items for a dict"));
        }
        Ok(items.chunks_exact(2).map(|c| (c[0], c[1])).collect())
    }

    fn extend(&mut self, items: Vec<ObjId>) -> Result<(), TorchError> {
        let t = self.top()?;
        match &mut self.objs[t] {
            Obj::List(l) => {
                l.extend(items);
                Ok(())
            }
            _ => Err(self.err("APPEND to something that is not a list")),
        }
    }

    fn set_items(&mut self, pairs: Vec<(ObjId, ObjId)>) -> Result<(), TorchError> {
        let t = self.top()?;
        match &mut self.objs[t] {
            Obj::Dict(d) => {
                d.extend(pairs);
                Ok(())
            }
            _ => Err(self.err("SETITEM on something that is not a dict")),
        }
    }

    fn step_memo(&mut self, op: u8) -> Result<(), TorchError> {
        match op {
            b'q' | b'r' | 0x94 => {
                let key = match op {
                    b'q' => self.uint(1)?,
                    b'r' => self.uint(4)?,
                    _ => self.memo.len() as u64,
                };
                let top = self.top()?;
                if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&key) {
                    return Err(self.err(format!("more than {MAX_MEMO} memo entries")));
                }
                self.memo.insert(key, top);
                Ok(())
            }
            b'h' | b'j' => {
                let key = self.uint(if op == b'h' { 1 } else { 4 })?;
                let Some(&id) = self.memo.get(&key) else {
                    return Err(self.err(format!("memo entry {key} was never stored")));
                };
                self.push_id(id)
            }
            _ => self.step_call(op),
        }
    }

    fn step_call(&mut self, op: u8) -> Result<(), TorchError> {
        match op {
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                let g = Global::resolve(&module, &name)?;
                self.push(Obj::Global(g))
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(m), Some(n)) = (self.str_of(module), self.str_of(name)) else {
                    return Err(self.err("STACK_GLOBAL needs two strings"));
                };
                let g = Global::resolve(m, n)?;
                self.push(Obj::Global(g))
            }
            b'Q' => {
                let pid = self.pop()?;
                let s = self.persistent_load(pid)?;
                self.push(Obj::Storage(s))
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let f = self.pop()?;
                match self.call(f, args)? {
                    Called::New(o) => self.push(o),
                    Called::Same(id) => self.push_id(id),
                }
            }
            b'b' => {
                self.pop()?;
                match self.objs[self.top()?] {
                    Obj::Dict(_) | Obj::Tensor(_) => Ok(()),
                    _ => Err(self.err("BUILD on something that is not a dict or a tensor")),
                }
            }
            _ => Err(self.err(format!(
                "opcode 0x{op:02x} is not one a weights-only reader accepts"
            ))),
        }
    }

    fn int_of(&self, id: ObjId, what: &str) -> Result<u64, TorchError> {
        match self.objs[id] {
            Obj::Int(v) if v >= 0 => Ok(v as u64),
            _ => Err(self.err(format!("{what} is not a non-negative integer"))),
        }
    }

    fn persistent_load(&self, pid: ObjId) -> Result<StorageRef, TorchError> {
        let bad = || self.err("a persistent id is not ('storage', type, key, location, numel)");
        let Obj::Tuple(t) = &self.objs[pid] else {
            return Err(bad());
        };
        let [tag, kind, key, _location, numel] = t.as_slice() else {
            return Err(bad());
        };
        if self.str_of(*tag) != Some("storage") {
            return Err(bad());
        }
        let Obj::Global(Global::Storage(kind)) = self.objs[*kind] else {
            return Err(bad());
        };
        let key = self.str_of(*key).ok_or_else(bad)?.to_string();
        let numel = self.int_of(*numel, "a storage's numel")?;
        Ok(StorageRef { kind, key, numel })
    }

    fn args_of(&self, args: ObjId) -> Result<&[ObjId], TorchError> {
        match &self.objs[args] {
            Obj::Tuple(t) => Ok(t),
            _ => Err(self.err("call arguments are not a tuple")),
        }
    }

    /// Takes `n` items from the call budget.
    fn charge(&mut self, n: usize) -> Result<(), TorchError> {
        self.work_left = self.work_left.checked_sub(n).ok_or_else(|| {
            self.err(
                "calls copy more items than the pickle's size allows (a repeated large argument)",
            )
        })?;
        Ok(())
    }

    fn call(&mut self, f: ObjId, args: ObjId) -> Result<Called, TorchError> {
        let Obj::Global(g) = self.objs[f] else {
            return Err(self.err("REDUCE of something that is not an accepted global"));
        };
        let a = self.args_of(args)?.to_vec();
        self.charge(a.len())?;
        let new = match (g, a.as_slice()) {
            (Global::OrderedDict, []) => Obj::Dict(Vec::new()),
            (Global::OrderedDict, [items]) => self.dict_from_pairs(*items)?,
            (Global::RebuildTensorV2, [s, o, size, stride, ..]) if a.len() <= 7 => {
                self.rebuild_tensor(*s, *o, *size, *stride)?
            }
            (Global::RebuildTensor, [s, o, size, stride]) => {
                self.rebuild_tensor(*s, *o, *size, *stride)?
            }
            (Global::RebuildParameter, [t, _, _])
            | (Global::RebuildParameterWithState, [t, _, _, _]) => match &self.objs[*t] {
                Obj::Tensor(_) => return Ok(Called::Same(*t)),
                _ => return Err(self.err("_rebuild_parameter of something that is not a tensor")),
            },
            (Global::TorchSize, [t]) => match &self.objs[*t] {
                Obj::Tuple(_) => return Ok(Called::Same(*t)),
                _ => return Err(self.err("torch.Size of something that is not a tuple")),
            },
            (Global::CodecsEncode, [s, enc]) => self.latin1(*s, *enc)?,
            (Global::Storage(_), _) => {
                return Err(self
                    .err("a storage class is called; storages may only appear as persistent ids"));
            }
            _ => {
                return Err(self.err(format!(
                    "{g:?} called with {} arguments it does not take",
                    a.len()
                )));
            }
        };
        Ok(Called::New(new))
    }

    fn dict_from_pairs(&mut self, items: ObjId) -> Result<Obj, TorchError> {
        let n = match &self.objs[items] {
            Obj::List(l) | Obj::Tuple(l) => l.len(),
            _ => return Err(self.err("OrderedDict of something that is not a list of pairs")),
        };
        self.charge(n)?;
        let (Obj::List(l) | Obj::Tuple(l)) = &self.objs[items] else {
            unreachable!("checked above");
        };
        let mut pairs = Vec::with_capacity(l.len());
        for &p in l {
            match &self.objs[p] {
                Obj::Tuple(kv) | Obj::List(kv) if kv.len() == 2 => pairs.push((kv[0], kv[1])),
                _ => return Err(self.err("OrderedDict item is not a pair")),
            }
        }
        Ok(Obj::Dict(pairs))
    }

    fn dims(&self, id: ObjId, what: &str) -> Result<Vec<u64>, TorchError> {
        let (Obj::Tuple(t) | Obj::List(t)) = &self.objs[id] else {
            return Err(self.err(format!("a tensor's {what} is not a tuple")));
        };
        if t.len() > MAX_DIMS {
            return Err(self.err(format!(
                "a tensor's {what} has {} dimensions, more than {MAX_DIMS}",
                t.len()
            )));
        }
        t.iter().map(|&d| self.int_of(d, what)).collect()
    }

    fn rebuild_tensor(
        &self,
        storage: ObjId,
        offset: ObjId,
        size: ObjId,
        stride: ObjId,
    ) -> Result<Obj, TorchError> {
        let Obj::Storage(s) = &self.objs[storage] else {
            return Err(self.err("a tensor rebuild whose storage is not a persistent id"));
        };
        let size = self.dims(size, "size")?;
        let stride = self.dims(stride, "stride")?;
        if size.len() != stride.len() {
            return Err(self.err(format!(
                "a tensor of {} dimensions with {} strides",
                size.len(),
                stride.len()
            )));
        }
        Ok(Obj::Tensor(TensorView {
            storage: s.clone(),
            offset: self.int_of(offset, "storage offset")?,
            size,
            stride,
        }))
    }

    fn latin1(&mut self, s: ObjId, enc: ObjId) -> Result<Obj, TorchError> {
        if let Obj::Str(text) = &self.objs[s] {
            self.charge(text.len())?;
        }
        let (Some(s), Some("latin1" | "latin-1")) = (self.str_of(s), self.str_of(enc)) else {
            return Err(self.err("_codecs.encode other than (text, 'latin1')"));
        };
        let bytes: Option<Vec<u8>> = s.chars().map(|c| u8::try_from(c).ok()).collect();
        bytes
            .map(Obj::Bytes)
            .ok_or_else(|| self.err("_codecs.encode of text beyond latin-1"))
    }
}

/// What a call made: a new object, or one it returns as it is (a parameter's tensor,
/// `torch.Size`'s tuple).
enum Called {
    New(Obj),
    Same(ObjId),
}

/// Bytes of the length field of a string or bytes opcode.
fn len_bytes(op: u8) -> usize {
    match op {
        0x8c | b'C' => 1,
        b'X' | b'B' => 4,
        _ => 8,
    }
}
