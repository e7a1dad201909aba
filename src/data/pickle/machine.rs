//! The pickle machine: interprets the opcodes of protocols 2 to 5 that numpy arrays use on a
//! stack with marks and a memo, and calls only the allowed globals (REDUCE) and sets only
//! ndarray and dtype state (BUILD). Nothing is executed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::MAX_DEPTH;
use super::value::{Container, Dtype, Global, NdArray, Value};

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
pub(super) fn unpickle(buf: &[u8]) -> Result<Value, String> {
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
            // Byte strings: SHORT_BINSTRING, SHORT_BINBYTES (1-byte length), BINSTRING,
            // BINBYTES (4), BINBYTES8, BYTEARRAY8 (8).
            b'U' | b'C' | b'T' | b'B' | 0x8e | 0x96 => {
                let n = match op {
                    b'U' | b'C' => r.u8()? as usize,
                    b'T' | b'B' => r.len_i32()?,
                    _ => r.len_u64()?,
                };
                stack.push(Value::Bytes(Rc::new(r.take(n)?.to_vec())));
            }
            // Unicode strings: SHORT_BINUNICODE (1-byte length), BINUNICODE (4),
            // BINUNICODE8 (8).
            0x8c | b'X' | 0x8d => {
                let n = match op {
                    0x8c => r.u8()? as usize,
                    b'X' => r.u32()? as usize,
                    _ => r.len_u64()?,
                };
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

/// Refuses an array stored in Fortran order (column-major) unless that is also C order (at
/// most one dimension above 1).
fn c_order(fortran: bool, shape: &[usize]) -> Result<(), String> {
    if fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err("Fortran-order (column-major) arrays are not supported".into());
    }
    Ok(())
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
            c_order(arg(3)?.text()? == "F", &shape)?;
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
            c_order(field(3)?.int()? != 0, &shape)?;
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
