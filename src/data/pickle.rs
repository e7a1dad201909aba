//! A safe reader for the tutorial's `mnist.pkl.gz`: a pickle of
//! `((x_train, y_train), (x_valid, y_valid), (x_test, y_test))` of numpy arrays.
//!
//! Nothing is executed. The reader interprets the pickle opcodes that numpy arrays use and
//! accepts only these globals: `numpy.core.multiarray._reconstruct` (also `numpy._core...`),
//! `numpy.ndarray`, `numpy.dtype`, `_codecs.encode` (bytes in Python 3's protocol 2) and
//! `numpy.core.numeric._frombuffer` (also `numpy._core...`, how numpy writes arrays with
//! protocol 5). It reads Python 2's protocol 2 (raw bytes as BINSTRING / SHORT_BINSTRING, as
//! in the tutorial's file) and Python 3 numpy's protocols 2 to 5. Any other global, a shape
//! that disagrees with the byte count, big-endian or Fortran-order data, or truncation is an
//! error that says what is wrong.
//!
//! Hostile files: containers may nest at most [`MAX_DEPTH`] levels, and no value is ever
//! walked or dropped recursively (see `Drop for Value`), so no file can overflow the stack; the
//! decompressed pickle is at most [`MAX_PICKLE_BYTES`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use super::{DataError, idx::read_gz_bounded};

/// The deepest nesting of tuples, lists, dicts and MARKs accepted. numpy's pickles nest 4
/// levels; the limit only stops hostile files early with a clear error.
pub const MAX_DEPTH: u32 = 100;

/// The most bytes a (decompressed) MNIST-style pickle may hold: the tutorial's file is 220 MB
/// (70,000 float32 images of 784 pixels and their int64 labels).
pub const MAX_PICKLE_BYTES: u64 = 512 << 20;

/// The callables a numpy pickle may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Global {
    Reconstruct,
    Ndarray,
    Dtype,
    CodecsEncode,
    FromBuffer,
}

impl Global {
    fn resolve(module: &str, name: &str) -> Result<Global, String> {
        Ok(match (module, name) {
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => Global::Reconstruct,
            ("numpy", "ndarray") => Global::Ndarray,
            ("numpy", "dtype") => Global::Dtype,
            ("_codecs", "encode") => Global::CodecsEncode,
            ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => Global::FromBuffer,
            _ => {
                return Err(format!(
                    "refusing global '{module}.{name}': only numpy array globals are allowed"
                ));
            }
        })
    }
}

/// A numpy dtype: its code (`f4`, `i8`, `u1`, ...) and byte order (`<`, `>`, `|`, `=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dtype {
    pub code: String,
    pub byteorder: char,
}

/// A numpy array as stored in the pickle: C-order raw bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct NdArray {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Rc<Vec<u8>>,
}

/// A list (items) or dict (key, value, key, value, ...): mutable and shared, as in Python,
/// with its nesting depth (1 + the deepest item's, at the time items were added).
#[derive(Debug, Default)]
struct Container {
    depth: Cell<u32>,
    items: RefCell<Vec<Value>>,
}

impl Container {
    fn new(items: Vec<Value>) -> Result<Rc<Container>, String> {
        let c = Container::default();
        c.add(items)?;
        Ok(Rc::new(c))
    }
    fn add(&self, items: Vec<Value>) -> Result<(), String> {
        self.depth.set(self.depth.get().max(nesting(&items)?));
        self.items.borrow_mut().extend(items);
        Ok(())
    }
}

/// The depth of a container holding `items`, refused past [`MAX_DEPTH`].
fn nesting(items: &[Value]) -> Result<u32, String> {
    let d = 1 + items.iter().map(Value::depth).max().unwrap_or(0);
    if d > MAX_DEPTH {
        return Err(format!("containers nested deeper than {MAX_DEPTH} levels"));
    }
    Ok(d)
}

/// A Python value, as far as numpy pickles need them. Mutable objects are shared, as in Python.
#[derive(Clone, Debug)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float,
    Str(Rc<String>),
    Bytes(Rc<Vec<u8>>),
    /// Items and nesting depth.
    Tuple(Rc<Vec<Value>>, u32),
    List(Rc<Container>),
    Dict(Rc<Container>),
    Global(Global),
    Dtype(Rc<RefCell<Dtype>>),
    /// An ndarray made by `_reconstruct`, filled in by BUILD.
    Array(Rc<RefCell<Option<NdArray>>>),
}

/// Dropping a value never recurses: a file can nest containers far deeper than the stack
/// allows through shared lists (APPEND after MEMO), which the depth count cannot see. So the
/// children of every container that is dropped for good are moved to a work list first, and
/// each value is dropped with no children left.
impl Drop for Value {
    fn drop(&mut self) {
        fn take_children(v: &mut Value, work: &mut Vec<Value>) {
            match v {
                Value::Tuple(t, _) => {
                    if let Some(items) = Rc::get_mut(t) {
                        work.append(items);
                    }
                }
                Value::List(c) | Value::Dict(c) => {
                    if let Some(c) = Rc::get_mut(c) {
                        work.append(c.items.get_mut());
                    }
                }
                _ => {}
            }
        }
        let mut work = Vec::new();
        take_children(self, &mut work);
        while let Some(mut v) = work.pop() {
            take_children(&mut v, &mut work);
        }
    }
}

impl Value {
    fn tuple_of(items: Vec<Value>) -> Result<Value, String> {
        let d = nesting(&items)?;
        Ok(Value::Tuple(Rc::new(items), d))
    }
    fn depth(&self) -> u32 {
        match self {
            Value::Tuple(_, d) => *d,
            Value::List(c) | Value::Dict(c) => c.depth.get(),
            _ => 0,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(..) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Dtype(_) => "dtype",
            Value::Array(_) => "ndarray",
        }
    }
    /// A text value: unicode, or a Python 2 `str` (bytes, read as latin-1).
    fn text(&self) -> Result<String, String> {
        match self {
            Value::Str(s) => Ok(s.to_string()),
            Value::Bytes(b) => Ok(b.iter().map(|&c| c as char).collect()),
            v => Err(format!("expected a string, found {}", v.kind())),
        }
    }
    fn int(&self) -> Result<i64, String> {
        match self {
            Value::Int(i) => Ok(*i),
            Value::Bool(b) => Ok(*b as i64),
            v => Err(format!("expected an int, found {}", v.kind())),
        }
    }
    fn tuple(&self) -> Result<Rc<Vec<Value>>, String> {
        match self {
            Value::Tuple(t, _) => Ok(t.clone()),
            v => Err(format!("expected a tuple, found {}", v.kind())),
        }
    }
    fn shape(&self) -> Result<Vec<usize>, String> {
        self.tuple()?
            .iter()
            .map(|d| usize::try_from(d.int()?).map_err(|_| "negative dimension in shape".to_string()))
            .collect()
    }
    fn bytes(&self) -> Result<Rc<Vec<u8>>, String> {
        match self {
            Value::Bytes(b) => Ok(b.clone()),
            v => Err(format!("expected array bytes, found {}", v.kind())),
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() - self.pos {
            return Err(format!(
                "truncated: needs {n} bytes at offset {}, only {} left",
                self.pos,
                self.buf.len() - self.pos
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.buf[self.pos..];
        let end = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or("truncated: unterminated line")?;
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end])
            .map(str::to_string)
            .map_err(|_| "non-UTF-8 global name".to_string())
    }
    fn len_u64(&mut self) -> Result<usize, String> {
        usize::try_from(self.u64()?).map_err(|_| "length does not fit in memory".to_string())
    }
    fn len_i32(&mut self) -> Result<usize, String> {
        usize::try_from(self.i32()?).map_err(|_| "negative length".to_string())
    }
}

fn utf8(b: &[u8]) -> Result<Value, String> {
    std::str::from_utf8(b)
        .map(|s| Value::Str(Rc::new(s.to_string())))
        .map_err(|_| "invalid UTF-8 in a unicode string".to_string())
}

/// Interprets a pickle and returns its top-level value.
fn unpickle(buf: &[u8]) -> Result<Value, String> {
    let mut r = Reader { buf, pos: 0 };
    let mut stack: Vec<Value> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    fn pop(stack: &mut Vec<Value>) -> Result<Value, String> {
        stack.pop().ok_or_else(|| "stack underflow".to_string())
    }
    fn pop_mark(stack: &mut Vec<Value>, marks: &mut Vec<usize>) -> Result<Vec<Value>, String> {
        let m = marks.pop().ok_or("missing MARK")?;
        if m > stack.len() {
            return Err("stack underflow at MARK".into());
        }
        Ok(stack.split_off(m))
    }
    loop {
        let at = r.pos;
        let op = r
            .u8()
            .map_err(|_| format!("truncated: no STOP opcode after {} bytes", buf.len()))?;
        match op {
            0x80 => {
                let p = r.u8()?;
                if p > 5 {
                    return Err(format!("unsupported pickle protocol {p}"));
                }
            }
            0x95 => {
                r.u64()?; // FRAME: a length hint only
            }
            b'.' => return pop(&mut stack),
            b'(' => {
                if marks.len() >= MAX_DEPTH as usize {
                    return Err(format!("MARKs nested deeper than {MAX_DEPTH} levels"));
                }
                marks.push(stack.len())
            }
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'K' => stack.push(Value::Int(r.u8()? as i64)),
            b'M' => stack.push(Value::Int(r.u16()? as i64)),
            b'J' => stack.push(Value::Int(r.i32()? as i64)),
            0x8a => {
                let n = r.u8()? as usize;
                let b = r.take(n)?;
                if n > 8 {
                    return Err(format!("LONG1 of {n} bytes is too large"));
                }
                let mut v: i64 = 0;
                for (i, &byte) in b.iter().enumerate() {
                    v |= (byte as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n); // sign-extend
                }
                stack.push(Value::Int(v));
            }
            b'G' => {
                r.take(8)?; // BINFLOAT: no float is needed by numpy arrays
                stack.push(Value::Float);
            }
            b'U' | b'C' => {
                let n = r.u8()? as usize;
                stack.push(Value::Bytes(Rc::new(r.take(n)?.to_vec())));
            }
            b'T' | b'B' => {
                let n = r.len_i32()?;
                stack.push(Value::Bytes(Rc::new(r.take(n)?.to_vec())));
            }
            0x8e | 0x96 => {
                let n = r.len_u64()?;
                stack.push(Value::Bytes(Rc::new(r.take(n)?.to_vec())));
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(utf8(r.take(n)?)?);
            }
            b'X' => {
                let n = r.u32()? as usize;
                stack.push(utf8(r.take(n)?)?);
            }
            0x8d => {
                let n = r.len_u64()?;
                stack.push(utf8(r.take(n)?)?);
            }
            b')' => stack.push(Value::tuple_of(Vec::new())?),
            b't' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Value::tuple_of(items)?);
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err("stack underflow".into());
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::tuple_of(items)?);
            }
            b']' => stack.push(Value::List(Container::new(Vec::new())?)),
            b'l' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Value::List(Container::new(items)?));
            }
            b'a' | b'e' => {
                let items = if op == b'a' {
                    vec![pop(&mut stack)?]
                } else {
                    pop_mark(&mut stack, &mut marks)?
                };
                match stack.last() {
                    Some(Value::List(l)) => l.add(items)?,
                    _ => return Err("APPEND to something that is not a list".into()),
                }
            }
            b'}' => stack.push(Value::Dict(Container::new(Vec::new())?)),
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop(&mut stack)?;
                    vec![pop(&mut stack)?, v]
                } else {
                    pop_mark(&mut stack, &mut marks)?
                };
                if items.len() % 2 != 0 {
                    return Err("SETITEMS with an odd number of items".into());
                }
                match stack.last() {
                    Some(Value::Dict(d)) => d.add(items)?,
                    _ => return Err("SETITEM on something that is not a dict".into()),
                }
            }
            b'q' | b'r' | 0x94 => {
                let key = match op {
                    b'q' => r.u8()? as u32,
                    b'r' => r.u32()?,
                    _ => memo.len() as u32,
                };
                let top = stack.last().ok_or("memoize with an empty stack")?.clone();
                memo.insert(key, top);
            }
            b'h' | b'j' => {
                let key = if op == b'h' { r.u8()? as u32 } else { r.u32()? };
                let v = memo
                    .get(&key)
                    .ok_or_else(|| format!("memo key {key} used before it was set"))?;
                stack.push(v.clone());
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                stack.push(Value::Global(Global::resolve(&module, &name)?));
            }
            0x93 => {
                let name = pop(&mut stack)?.text()?;
                let module = pop(&mut stack)?.text()?;
                stack.push(Value::Global(Global::resolve(&module, &name)?));
            }
            b'R' => {
                let args = pop(&mut stack)?.tuple()?;
                let f = pop(&mut stack)?;
                stack.push(call(f, &args)?);
            }
            b'b' => {
                let state = pop(&mut stack)?;
                let obj = stack.last().ok_or("BUILD with an empty stack")?;
                build(obj, &state)?;
            }
            0x97 | 0x98 => {
                return Err("out-of-band buffers (pickle protocol 5 buffer_callback) are not supported".into());
            }
            _ => {
                return Err(format!("unsupported pickle opcode 0x{op:02x} at offset {at}"));
            }
        }
    }
}

fn dtype_of(v: &Value) -> Result<Dtype, String> {
    match v {
        Value::Dtype(d) => Ok(d.borrow().clone()),
        v => Err(format!("expected a dtype, found {}", v.kind())),
    }
}

/// REDUCE: calls one of the allowed globals.
fn call(f: Value, args: &[Value]) -> Result<Value, String> {
    let Value::Global(g) = f else {
        return Err(format!("cannot call a {}", f.kind()));
    };
    let arg = |i: usize| args.get(i).ok_or_else(|| format!("{g:?}: missing argument {i}"));
    match g {
        Global::Reconstruct => {
            if !matches!(arg(0)?, Value::Global(Global::Ndarray)) {
                return Err("_reconstruct of something other than numpy.ndarray".into());
            }
            Ok(Value::Array(Rc::new(RefCell::new(None))))
        }
        Global::Dtype => {
            let code = arg(0)?.text()?;
            Ok(Value::Dtype(Rc::new(RefCell::new(Dtype { code, byteorder: '=' }))))
        }
        Global::CodecsEncode => {
            let s = arg(0)?.text()?;
            let enc = arg(1)?.text()?;
            if enc != "latin1" && enc != "latin-1" {
                return Err(format!("_codecs.encode with encoding '{enc}'"));
            }
            let bytes: Result<Vec<u8>, String> = s
                .chars()
                .map(|c| u8::try_from(c as u32).map_err(|_| "non-latin-1 character".to_string()))
                .collect();
            Ok(Value::Bytes(Rc::new(bytes?)))
        }
        Global::FromBuffer => {
            let data = arg(0)?.bytes()?;
            let dtype = dtype_of(arg(1)?)?;
            let shape = arg(2)?.shape()?;
            let order = arg(3)?.text()?;
            if order == "F" && shape.iter().filter(|&&d| d > 1).count() > 1 {
                return Err("Fortran-order (column-major) arrays are not supported".into());
            }
            Ok(Value::Array(Rc::new(RefCell::new(Some(NdArray {
                dtype,
                shape,
                data,
            })))))
        }
        Global::Ndarray => Err("numpy.ndarray called directly".into()),
    }
}

/// BUILD: sets the state of an ndarray or a dtype.
fn build(obj: &Value, state: &Value) -> Result<(), String> {
    let st = state.tuple()?;
    let field = |i: usize| st.get(i).ok_or_else(|| format!("BUILD state has no field {i}"));
    match obj {
        Value::Array(a) => {
            // (version, shape, dtype, is_fortran, raw bytes)
            let shape = field(1)?.shape()?;
            let dtype = dtype_of(field(2)?)?;
            let fortran = field(3)?.int()? != 0;
            if fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
                return Err("Fortran-order (column-major) arrays are not supported".into());
            }
            let data = match field(4)? {
                Value::List(_) => return Err("object arrays are not supported".into()),
                v => v.bytes()?,
            };
            *a.borrow_mut() = Some(NdArray { dtype, shape, data });
            Ok(())
        }
        Value::Dtype(d) => {
            // (version, byteorder, subarray, names, fields, elsize, alignment, flags)
            let bo = field(1)?.text()?;
            d.borrow_mut().byteorder = bo.chars().next().unwrap_or('=');
            Ok(())
        }
        v => Err(format!("BUILD on a {}", v.kind())),
    }
}

fn array(v: &Value, what: &str) -> Result<NdArray, String> {
    match v {
        Value::Array(a) => a
            .borrow()
            .clone()
            .ok_or_else(|| format!("{what}: ndarray without state")),
        v => Err(format!("{what}: expected an ndarray, found {}", v.kind())),
    }
}

impl NdArray {
    fn itemsize(&self) -> Result<usize, String> {
        let code = self.dtype.code.trim_start_matches(['<', '>', '|', '=']);
        match code {
            "f4" | "i4" | "u4" => Ok(4),
            "f8" | "i8" | "u8" => Ok(8),
            "u1" | "i1" | "b1" => Ok(1),
            "i2" | "u2" | "f2" => Ok(2),
            c => Err(format!("unsupported dtype '{c}'")),
        }
    }

    fn check(&self, what: &str) -> Result<&str, String> {
        let size = self.itemsize()?;
        let code = self.dtype.code.trim_start_matches(['<', '>', '|', '=']);
        let big = self.dtype.byteorder == '>' || self.dtype.code.starts_with('>');
        if big && size > 1 {
            return Err(format!("{what}: big-endian data ('>{code}') is not supported"));
        }
        let n: usize = self.shape.iter().product();
        if n.checked_mul(size) != Some(self.data.len()) {
            return Err(format!(
                "{what}: shape {:?} of {code} needs {} bytes, the array holds {}",
                self.shape,
                n.saturating_mul(size),
                self.data.len()
            ));
        }
        Ok(code)
    }

    /// Images as u8 pixels: from f32 values that are exactly pixel/256, or from u8.
    fn to_pixels(&self, what: &str) -> Result<(usize, Vec<u8>), String> {
        let code = self.check(what)?;
        let n = *self.shape.first().ok_or_else(|| format!("{what}: 0-d array"))?;
        let per: usize = self.shape[1..].iter().product();
        if per != 784 {
            return Err(format!(
                "{what}: shape {:?} is not N images of 784 (28x28) pixels",
                self.shape
            ));
        }
        let px = match code {
            "u1" => self.data.to_vec(),
            "f4" => self
                .data
                .chunks_exact(4)
                .enumerate()
                .map(|(i, c)| {
                    let v = f32::from_le_bytes(c.try_into().unwrap()) * 256.0;
                    if (0.0..=255.0).contains(&v) && v.fract() == 0.0 {
                        Ok(v as u8)
                    } else {
                        Err(format!(
                            "{what}: value {} at index {i} is not a pixel/256 (0..=255 over 256)",
                            v / 256.0
                        ))
                    }
                })
                .collect::<Result<_, _>>()?,
            c => return Err(format!("{what}: images of dtype '{c}' (expected f4 or u1)")),
        };
        Ok((n, px))
    }

    /// Labels 0..=9 from any integer dtype.
    fn to_labels(&self, what: &str) -> Result<Vec<u8>, String> {
        let code = self.check(what)?;
        if self.shape.len() != 1 {
            return Err(format!("{what}: labels must be 1-d, shape is {:?}", self.shape));
        }
        let size = self.itemsize()?;
        let signed = code.starts_with('i');
        if !matches!(code.as_bytes()[0], b'i' | b'u') {
            return Err(format!("{what}: labels of dtype '{code}' (expected an integer type)"));
        }
        self.data
            .chunks_exact(size)
            .enumerate()
            .map(|(i, c)| {
                let mut b = [0u8; 8];
                b[..size].copy_from_slice(c);
                if signed && c[size - 1] & 0x80 != 0 {
                    b[size..].fill(0xff);
                }
                let v = i64::from_le_bytes(b);
                u8::try_from(v)
                    .ok()
                    .filter(|&d| d <= 9)
                    .ok_or_else(|| format!("{what}: label {v} at index {i} is not a digit 0-9"))
            })
            .collect()
    }
}

/// One split from the pickle: u8 images (N*784) and labels.
pub type Split = (Vec<u8>, Vec<u8>);

/// Parses the tutorial's pickle (already decompressed) into (train, valid, test).
pub fn parse_mnist_pickle(bytes: &[u8]) -> Result<[Split; 3], String> {
    let top = unpickle(bytes)?.tuple().map_err(|e| format!("top level: {e}"))?;
    if top.len() != 3 {
        return Err(format!(
            "top level: expected 3 splits (train, valid, test), found {}",
            top.len()
        ));
    }
    let names = ["train", "valid", "test"];
    let mut out: Vec<Split> = Vec::new();
    for (split, name) in top.iter().zip(names) {
        let pair = split.tuple().map_err(|e| format!("{name}: {e}"))?;
        if pair.len() != 2 {
            return Err(format!("{name}: expected (x, y), found a tuple of {}", pair.len()));
        }
        let (n, x) = array(&pair[0], &format!("x_{name}"))?.to_pixels(&format!("x_{name}"))?;
        let y = array(&pair[1], &format!("y_{name}"))?.to_labels(&format!("y_{name}"))?;
        if y.len() != n {
            return Err(format!("{name}: {n} images but {} labels", y.len()));
        }
        out.push((x, y));
    }
    Ok(out.try_into().unwrap())
}

/// Reads `mnist.pkl.gz` (or an uncompressed pickle) into (train, valid, test).
pub fn read_mnist_pickle(path: &Path) -> Result<[Split; 3], DataError> {
    let bytes = read_gz_bounded(path, MAX_PICKLE_BYTES, "an MNIST pickle")?;
    parse_mnist_pickle(&bytes).map_err(|e| DataError::new(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_other_globals_and_unknown_opcodes() {
        let evil = b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.";
        let e = unpickle(evil).unwrap_err();
        assert!(e.contains("refusing global 'os.system'"), "{e}");
        let e = unpickle(b"\x80\x02\xff").unwrap_err();
        assert!(e.contains("unsupported pickle opcode 0xff at offset 2"), "{e}");
        let e = unpickle(b"\x80\x02K\x01").unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let e = unpickle(b"\x80\x02T\xff\xff\x00\x00ab").unwrap_err();
        assert!(e.contains("truncated: needs 65535 bytes"), "{e}");
    }

    #[test]
    fn small_values_and_containers() {
        // (1, -2, 300, 70000, LONG1 -1, True, None, 'ab', [1, 2], {1: 2})
        let p = b"\x80\x02(K\x01J\xfe\xff\xff\xffM,\x01J\x70\x11\x01\x00\x8a\x01\xff\x88NX\x02\x00\x00\x00ab]q\x00(K\x01K\x02e}(K\x01K\x02utq\x01.";
        let v = unpickle(p).unwrap().tuple().unwrap();
        let ints: Vec<i64> = v[..5].iter().map(|x| x.int().unwrap()).collect();
        assert_eq!(ints, vec![1, -2, 300, 70000, -1]);
        assert!(matches!(v[5], Value::Bool(true)) && matches!(v[6], Value::None));
        assert_eq!(v[7].text().unwrap(), "ab");
        assert!(matches!(&v[8], Value::List(l) if l.items.borrow().len() == 2));
        assert!(matches!(&v[9], Value::Dict(d) if d.items.borrow().len() == 2));
    }
}
