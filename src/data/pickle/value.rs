//! The values of a numpy pickle: the few Python types its opcodes build (shared mutable lists
//! and dicts as in Python, with their nesting depth counted and bounded), numpy dtypes and
//! arrays, and the globals a pickle may name. No value is walked or dropped recursively.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::MAX_DEPTH;

/// The callables a numpy pickle may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Global {
    Reconstruct,
    Ndarray,
    Dtype,
    CodecsEncode,
    FromBuffer,
}

impl Global {
    pub(super) fn resolve(module: &str, name: &str) -> Result<Global, String> {
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
pub(super) struct Container {
    depth: Cell<u32>,
    pub(super) items: RefCell<Vec<Value>>,
}

impl Container {
    pub(super) fn new(items: Vec<Value>) -> Result<Rc<Container>, String> {
        let c = Container::default();
        c.add(items)?;
        Ok(Rc::new(c))
    }
    pub(super) fn add(&self, items: Vec<Value>) -> Result<(), String> {
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
pub(super) enum Value {
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
    pub(super) fn tuple_of(items: Vec<Value>) -> Result<Value, String> {
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
    pub(super) fn kind(&self) -> &'static str {
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
    pub(super) fn text(&self) -> Result<String, String> {
        match self {
            Value::Str(s) => Ok(s.to_string()),
            Value::Bytes(b) => Ok(b.iter().map(|&c| c as char).collect()),
            v => Err(format!("expected a string, found {}", v.kind())),
        }
    }
    pub(super) fn int(&self) -> Result<i64, String> {
        match self {
            Value::Int(i) => Ok(*i),
            Value::Bool(b) => Ok(*b as i64),
            v => Err(format!("expected an int, found {}", v.kind())),
        }
    }
    pub(super) fn tuple(&self) -> Result<Rc<Vec<Value>>, String> {
        match self {
            Value::Tuple(t, _) => Ok(t.clone()),
            v => Err(format!("expected a tuple, found {}", v.kind())),
        }
    }
    pub(super) fn shape(&self) -> Result<Vec<usize>, String> {
        self.tuple()?
            .iter()
            .map(|d| usize::try_from(d.int()?).map_err(|_| "negative dimension in shape".to_string()))
            .collect()
    }
    pub(super) fn bytes(&self) -> Result<Rc<Vec<u8>>, String> {
        match self {
            Value::Bytes(b) => Ok(b.clone()),
            v => Err(format!("expected array bytes, found {}", v.kind())),
        }
    }
}
