"""The embedded engine: the policy compiled by OPA to WebAssembly, run in-process by wasmtime.

`opa build -t wasm -e aecl/main/decision` compiles the Rego modules of a
policy set (enforcer.policy.wasm_build: the committed build of the shipped
policy, else the opa binary). The module is instantiated once per policy set
with the set's whole data document loaded into its memory; every decision is
then one call of the ABI 1.2+ `opa_eval` export: the input's JSON is written
at the heap pointer, `opa_eval` evaluates the entrypoint and returns the
address of the result set's JSON, `[{"result": <decision>}]`.

The exports are called through wasmtime's C API directly
(`wasmtime_func_call_unchecked` over preallocated raw slots, after their
types were checked once at load): wasmtime-py's generic call path converts
and type-checks every argument on every call and was measured 3x slower.

Built-ins that OPA does not compile into the module are imports the host
implements: this engine implements `sprintf` (enforcer.policy.sprintf, OPA's
formatting); a policy that needs another one is refused at load time, naming
it, with the advice to use the OPA sidecar engine.

Every failure is a PolicyError, which the pipeline turns into BLOCK: a trap
(an `opa_abort`, a runaway evaluation past its fuel budget, a fault), memory
beyond the limit, a missing entrypoint, output that is not one JSON result.
A trap may leave the instance's heap in any state, so the instance is thrown
away and the next evaluation gets a fresh one.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import threading
from collections import OrderedDict
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from enforcer.errors import ConfigError, MalformedDecision, PolicyError
from enforcer.policy.policyset import ENTRYPOINT, PolicySet
from enforcer.policy.sprintf import RegoValueError, opa_sprintf, parse_rego_value

log = logging.getLogger(__name__)

PAGE = 65536
# What one instance may use: the data document, the input and the evaluation's heap.
DEFAULT_MAX_MEMORY_BYTES = 256 << 20
# wasmtime fuel (about one unit per WebAssembly instruction) one evaluation
# may burn: the shipped policy needs about 10^5; 10^9 is a second or two of a
# runaway loop. Past it the evaluation traps (so BLOCK). Fuel, not an epoch
# deadline: a deadline needs a ticker thread that takes the GIL, which the
# evaluation would then have to release and win back on every call.
DEFAULT_FUEL = 1_000_000_000
_SETUP_FUEL = 1 << 62
ABI_VERSION = 1
MIN_ABI_MINOR = 2  # opa_eval, the one-call evaluation

# Built-in results remembered per instance (then forgotten all at once).
_RESULT_CACHE = 4096

# Host implementations of the built-ins OPA leaves to the host, by name.
BUILTINS: dict[str, Any] = {"sprintf": opa_sprintf}

_EXPORTS = {  # name -> (params, results), all i32
    "opa_eval": (7, 1),
    "opa_malloc": (1, 1),
    "opa_json_parse": (2, 1),
    "opa_json_dump": (1, 1),
    "opa_value_dump": (1, 1),
    "opa_heap_ptr_get": (0, 1),
    "builtins": (0, 1),
    "entrypoints": (0, 1),
}
_IMPORTS = {"memory", "opa_abort", "opa_println", "opa_builtin0", "opa_builtin1", "opa_builtin2",
            "opa_builtin3", "opa_builtin4"}

# The calls of an evaluation, bound without releasing the GIL (ctypes.PyDLL):
# releasing it around each would hand the interpreter to the service's other
# threads (gRPC, audit writer, state store) and wait to win it back, which
# was measured to quadruple an evaluation inside the service.
_wasmtime_gil = ctypes.PyDLL(ffi.dll._name)
_func_call = _wasmtime_gil.wasmtime_func_call_unchecked
_func_call.restype = ctypes.POINTER(ffi.wasmtime_error_t)
_func_call.argtypes = [ctypes.POINTER(ffi.wasmtime_context_t), ctypes.POINTER(ffi.wasmtime_func_t),
                       ctypes.POINTER(ffi.wasmtime_val_raw_t), ctypes.c_size_t,
                       ctypes.POINTER(ctypes.POINTER(ffi.wasm_trap_t))]
_memory_data = _wasmtime_gil.wasmtime_memory_data
_memory_data.restype = ctypes.c_void_p
_memory_data.argtypes = [ctypes.POINTER(ffi.wasmtime_context_t), ctypes.POINTER(ffi.wasmtime_memory_t)]
_memory_size = _wasmtime_gil.wasmtime_memory_data_size
_memory_size.restype = ctypes.c_size_t
_memory_size.argtypes = [ctypes.POINTER(ffi.wasmtime_context_t), ctypes.POINTER(ffi.wasmtime_memory_t)]
_set_fuel = _wasmtime_gil.wasmtime_context_set_fuel
_set_fuel.restype = ctypes.POINTER(ffi.wasmtime_error_t)
_set_fuel.argtypes = [ctypes.POINTER(ffi.wasmtime_context_t), ctypes.c_uint64]
_caller_context = _wasmtime_gil.wasmtime_caller_context
_caller_context.restype = ctypes.POINTER(ffi.wasmtime_context_t)
_caller_context.argtypes = [ctypes.POINTER(ffi.wasmtime_caller_t)]

_libc = ctypes.PyDLL(None)
_memchr = _libc.memchr
_memchr.restype = ctypes.c_void_p
_memchr.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

_engine_lock = threading.Lock()
_engine: wasmtime.Engine | None = None
_modules: OrderedDict[str, wasmtime.Module] = OrderedDict()
_MODULE_CACHE = 8


def wasm_engine() -> wasmtime.Engine:
    """One wasmtime engine per process, metering fuel (the evaluation budget)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            config = wasmtime.Config()
            config.consume_fuel = True
            _engine = wasmtime.Engine(config)
        return _engine


def compile_module(wasm: bytes) -> wasmtime.Module:
    """The module for these bytes, compiled once (a reload that changes only
    data reuses it)."""
    key = hashlib.sha256(wasm).hexdigest()
    with _engine_lock:
        module = _modules.get(key)
        if module is not None:
            _modules.move_to_end(key)
            return module
    try:
        module = wasmtime.Module(wasm_engine(), wasm)
    except wasmtime.WasmtimeError as e:
        raise PolicyError(f"not a WebAssembly module wasmtime accepts: {e}") from e
    with _engine_lock:
        _modules[key] = module
        while len(_modules) > _MODULE_CACHE:
            _modules.popitem(last=False)
    return module


class _Trapped(Exception):
    """An exported call ended in a trap or an error."""


class _Export:
    """One exported function, called through wasmtime_func_call_unchecked
    with raw slots allocated once (the type was checked at load)."""

    __slots__ = ("name", "_ref", "_func", "_slots", "_n", "_trap", "_owner")

    def __init__(self, name: str, func: wasmtime.Func, store: wasmtime.Store, owner: WasmPolicy) -> None:
        params, results = _EXPORTS[name]
        ty = func.type(store)
        i32 = str(wasmtime.ValType.i32())
        if [str(t) for t in ty.params] != [i32] * params or [str(t) for t in ty.results] != [i32] * results:
            raise PolicyError(f"export {name} does not have the OPA ABI's signature")
        self.name = name
        self._owner = owner
        self._func = func._func
        self._ref = ctypes.byref(self._func)
        self._n = max(params, results, 1)
        self._slots = (ffi.wasmtime_val_raw * self._n)()
        self._trap = ctypes.POINTER(ffi.wasm_trap_t)()

    def __call__(self, ctx: Any, *args: int) -> int:
        slots = self._slots
        i = 0
        for a in args:
            slots[i].i32 = a
            i += 1
        trap = self._trap
        error = _func_call(ctx, self._ref, slots, self._n, ctypes.byref(trap))
        if error or trap:
            raise _Trapped(self._why(error, trap))
        return slots[0].i32 & 0xFFFFFFFF

    def _why(self, error: Any, trap: Any) -> str:
        cause, self._owner._host_error = self._owner._host_error, None
        if error:
            message = str(wasmtime.WasmtimeError._from_ptr(error))
        else:
            t = wasmtime.Trap._from_ptr(trap)
            self._trap = ctypes.POINTER(ffi.wasm_trap_t)()
            message = t.message
            if t.trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
                message = "the evaluation ran past its fuel budget (a runaway loop?)"
        if cause is not None:  # a host function failed: that is the reason
            return str(cause)
        # wasmtime puts a backtrace first and the cause ("wasm trap: ...") last.
        lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
        causes = [ln for ln in lines if "wasm trap:" in ln or ln.startswith("interrupted")]
        return (causes or lines[-1:] or ["trap"])[-1]


_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))


class _HostError(Exception):
    pass


class WasmPolicy:
    """One OPA-compiled module, instantiated with one data document."""

    def __init__(self, wasm: bytes, data: Any, *, entrypoint: str = ENTRYPOINT,
                 max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES, fuel: int = DEFAULT_FUEL) -> None:
        self.entrypoint = entrypoint
        self._module = compile_module(wasm)
        self._max_pages = max(1, max_memory_bytes // PAGE)
        self._fuel = fuel
        try:
            self._data_json = json.dumps(data, separators=(",", ":"), ensure_ascii=False,
                                         allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise PolicyError(f"the data document is not JSON: {e}") from e
        self._check_module()
        self._lock = threading.Lock()
        self._host_error: BaseException | None = None
        self._results: dict[tuple[Any, ...], bytes] = {}
        self._fresh = False
        self._instantiate()

    # --- loading -------------------------------------------------------------

    def _check_module(self) -> None:
        module = self._module
        for imp in module.imports:
            if imp.module != "env" or imp.name not in _IMPORTS:
                raise PolicyError(f"the module imports {imp.module}.{imp.name}, which is not in OPA's "
                                  "WebAssembly ABI")
        exports = {e.name: e for e in module.exports}
        missing = [name for name in _EXPORTS if name not in exports]
        if missing:
            raise PolicyError(f"the module does not export {', '.join(missing)}: not an OPA policy module "
                              f"of ABI {ABI_VERSION}.{MIN_ABI_MINOR} or later")

    def _memory_type(self) -> wasmtime.MemoryType:
        for imp in self._module.imports:
            if imp.name == "memory":
                want = imp.type.limits.min
                if want > self._max_pages:
                    raise PolicyError(f"the module needs {want} memory pages, over the limit of {self._max_pages}")
                return wasmtime.MemoryType(wasmtime.Limits(want, self._max_pages))
        raise PolicyError("the module imports no memory: not an OPA policy module")

    def _instantiate(self) -> None:
        store = wasmtime.Store(wasm_engine())
        ctx = store._context()
        store.set_fuel(_SETUP_FUEL)
        memory = wasmtime.Memory(store, self._memory_type())
        self._callbacks: list[Any] = []  # the raw callbacks live as long as the store
        imports: list[Any] = []
        for imp in self._module.imports:
            if imp.name == "memory":
                imports.append(memory)
            elif imp.name == "opa_abort":
                imports.append(self._host(store, imp.type, self._on_abort))
            elif imp.name == "opa_println":
                imports.append(self._host(store, imp.type, self._on_println))
            else:
                imports.append(self._host(store, imp.type, self._on_builtin))
        try:
            instance = wasmtime.Instance(store, self._module, imports)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as e:
            raise PolicyError(f"the policy module does not instantiate: {e}") from e
        exports = instance.exports(store)
        self._store, self._ctx, self._memory = store, ctx, memory
        self._mem_ref = ctypes.byref(memory._memory)
        self._mem_base, self._mem_size = 0, -1
        self._x = {name: _Export(name, exports[name], store, self) for name in _EXPORTS}
        self._check_abi(exports, store)
        try:
            builtins = self._read_json(ctx, self._x["opa_json_dump"](ctx, self._x["builtins"](ctx)))
            entrypoints = self._read_json(ctx, self._x["opa_json_dump"](ctx, self._x["entrypoints"](ctx)))
        except _Trapped as e:
            raise PolicyError(f"the policy module failed at load: {e}") from e
        if not isinstance(builtins, dict) or not isinstance(entrypoints, dict):
            raise PolicyError("the policy module lists its built-ins or entrypoints out of shape")
        unknown = sorted(set(builtins) - set(BUILTINS))
        if unknown:
            raise ConfigError(f"the policy uses built-in(s) {', '.join(unknown)}, which OPA leaves to the host "
                              "and the embedded engine does not implement; use policy.engine: opa")
        self._builtins = {int(i): BUILTINS[name] for name, i in builtins.items()}
        self._builtin_names = {int(i): name for name, i in builtins.items()}
        if self.entrypoint not in entrypoints:
            raise PolicyError(f"the policy module has no entrypoint {self.entrypoint} "
                              f"(it has: {', '.join(sorted(entrypoints)) or 'none'})")
        self._entrypoint_id = int(entrypoints[self.entrypoint])
        try:
            n = len(self._data_json)
            raw = self._x["opa_malloc"](ctx, n)
            self._write(ctx, raw, self._data_json)
            self._data_addr = self._x["opa_json_parse"](ctx, raw, n)
            self._heap_ptr = self._x["opa_heap_ptr_get"](ctx)
        except (_Trapped, _HostError) as e:
            raise PolicyError(f"the data document does not load into the policy module: {e}") from e
        if self._data_addr == 0:
            raise PolicyError("the policy module could not parse the data document")
        self._fresh = True

    def _check_abi(self, exports: Any, store: wasmtime.Store) -> None:
        try:
            major = exports["opa_wasm_abi_version"].value(store)
            minor = exports["opa_wasm_abi_minor_version"].value(store)
        except (KeyError, AttributeError):
            raise PolicyError("the module does not say its OPA ABI version") from None
        if major != ABI_VERSION or minor < MIN_ABI_MINOR:
            raise PolicyError(f"the module is of OPA ABI {major}.{minor}; this engine needs "
                              f"{ABI_VERSION}.{MIN_ABI_MINOR} or later")
        self.abi = (major, minor)

    # --- memory ------------------------------------------------------------------

    def _base(self, ctx: Any) -> tuple[int, int]:
        """The memory's address and size; the address moves only when it grows."""
        size = _memory_size(ctx, self._mem_ref)
        if size != self._mem_size:
            self._mem_base, self._mem_size = _memory_data(ctx, self._mem_ref) or 0, size
        return self._mem_base, size

    def _write(self, ctx: Any, addr: int, data: bytes) -> None:
        base, size = self._base(ctx)
        if addr + len(data) > size:
            raise _HostError(f"{len(data)} bytes at {addr} do not fit the module's memory ({size} bytes)")
        ctypes.memmove(base + addr, data, len(data))

    def _read_cstr(self, ctx: Any, addr: int) -> bytes:
        base, size = self._base(ctx)
        if not 0 < addr < size:
            raise MalformedDecision(f"the policy module answered with an address outside its memory ({addr})")
        end = _memchr(base + addr, 0, size - addr)
        if end is None:
            raise MalformedDecision("the policy module's answer is not terminated")
        return ctypes.string_at(base + addr, end - base - addr)

    def _read_json(self, ctx: Any, addr: int) -> Any:
        raw = self._read_cstr(ctx, addr)
        try:
            return json.loads(raw)
        except ValueError as e:
            raise MalformedDecision(f"the policy module's answer is not JSON: {e}") from e

    def _ensure_memory(self, need: int) -> None:
        _, size = self._base(self._ctx)
        if need <= size:
            return
        pages = -(-(need - size) // PAGE)
        try:
            self._memory.grow(self._store, pages)
        except wasmtime.WasmtimeError:
            raise PolicyError(f"the input ({need - self._heap_ptr} bytes) does not fit the policy module's "
                              f"memory limit ({self._max_pages * PAGE} bytes)") from None

    # --- host functions ----------------------------------------------------------

    def _host(self, store: wasmtime.Store, ty: wasmtime.FuncType, handler: Any) -> wasmtime.Func:
        """A host function over wasmtime's unchecked callback: the i32
        arguments as ints, the result (if any) back in the first slot, and an
        exception as a trap whose reason the caller of the export reads."""
        nparams, has_result = len(ty.params), bool(ty.results)

        def callback(env: Any, caller: Any, slots: Any, n: int) -> int:
            try:
                ctx = _caller_context(caller)
                result = handler(ctx, *[slots[i].i32 for i in range(nparams)])
                if has_result:
                    slots[0].i32 = result or 0
                return 0
            except BaseException as e:  # noqa: BLE001 - becomes the trap's reason
                self._host_error = e
                msg = str(e).encode("utf-8", "replace")
                trap = ffi.wasmtime_trap_new(ctypes.create_string_buffer(msg), len(msg))
                return ctypes.cast(trap, ctypes.c_void_p).value or 0

        raw = ffi.wasmtime_func_unchecked_callback_t(callback)
        self._callbacks.append(raw)
        func = ffi.wasmtime_func_t()
        ffi.wasmtime_func_new_unchecked(store._context(), ty.ptr(), raw, None, _NO_FINALIZER, ctypes.byref(func))
        return wasmtime.Func._from_raw(func)

    def _on_abort(self, ctx: Any, addr: int) -> None:
        try:
            message = self._read_cstr(ctx, addr & 0xFFFFFFFF).decode("utf-8", "replace")
        except PolicyError:
            message = "(unreadable message)"
        raise _HostError(f"opa_abort: {message}")

    def _on_println(self, ctx: Any, addr: int) -> None:
        try:
            log.info("policy print: %s", self._read_cstr(ctx, addr & 0xFFFFFFFF).decode("utf-8", "replace"))
        except PolicyError:
            pass

    def _on_builtin(self, ctx: Any, builtin_id: int, _ctx: int, *args: int) -> int:
        name = self._builtin_names.get(builtin_id, f"#{builtin_id}")
        impl = self._builtins.get(builtin_id)
        if impl is None:
            raise _HostError(f"built-in {name} is not implemented by the embedded engine")
        dump = self._x["opa_value_dump"]
        # Built-ins are pure: the same arguments (by their serialisation) give
        # the same result, so a repeated call (a reason's format and its
        # values) skips parsing and formatting.
        key = (builtin_id, *(self._read_cstr(ctx, dump(ctx, a)) for a in args))
        out = self._results.get(key)
        if out is None:
            try:
                values = [parse_rego_value(text.decode("utf-8")) for text in key[1:]]
                result = impl(*values)
                out = json.dumps(result, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            except (RegoValueError, TypeError, ValueError, UnicodeDecodeError, PolicyError) as e:
                raise _HostError(f"built-in {name} failed: {e}") from None
            if len(self._results) >= _RESULT_CACHE:
                self._results.clear()
            self._results[key] = out
        raw = self._x["opa_malloc"](ctx, len(out))
        self._write(ctx, raw, out)
        value = self._x["opa_json_parse"](ctx, raw, len(out))
        if value == 0:
            raise _HostError(f"built-in {name}: the module did not parse its result")
        return value

    # --- evaluation --------------------------------------------------------------

    def evaluate_json(self, input_json: bytes) -> bytes:
        """The result set's JSON for one input document's JSON."""
        with self._lock:
            if not self._fresh:
                self._instantiate()  # the last evaluation trapped: start clean
            ctx = self._ctx
            n = len(input_json)
            addr = self._heap_ptr
            self._ensure_memory(addr + n + PAGE)
            self._write(ctx, addr, input_json)
            _set_fuel(ctx, self._fuel)
            try:
                result = self._x["opa_eval"](ctx, 0, self._entrypoint_id, self._data_addr, addr, n, addr + n, 0)
            except _Trapped as e:
                self._fresh = False
                if "memory" in str(e) or "malloc" in str(e):
                    raise PolicyError(f"the policy ran out of memory (limit {self._max_pages * PAGE} bytes): "
                                      f"{e}") from None
                raise PolicyError(f"embedded engine trapped: {e}") from None
            return self._read_cstr(ctx, result)

    def evaluate(self, policy_input: Any) -> Any:
        try:
            doc = json.dumps(policy_input, separators=(",", ":"), ensure_ascii=False,
                             allow_nan=False).encode("utf-8")
        except (TypeError, ValueError, UnicodeEncodeError) as e:
            raise PolicyError(f"the policy input is not JSON: {e}") from e
        raw = self.evaluate_json(doc)
        try:
            results = json.loads(raw)
        except ValueError as e:
            raise MalformedDecision(f"embedded engine returned unparseable output: {e}") from e
        if not isinstance(results, list):
            raise MalformedDecision("embedded engine returned something other than a result set")
        if not results:
            raise MalformedDecision("policy returned no decision (undefined)")
        if len(results) != 1 or not isinstance(results[0], dict) or "result" not in results[0]:
            raise MalformedDecision("policy returned no single decision")
        return results[0]["result"]


class WasmEngine:
    """PolicyEngine over a WasmPolicy: `policy.engine: embedded`."""

    name = "embedded"
    blocking = False

    def __init__(self, policy_set: PolicySet, *, wasm: bytes | None = None, opa_binary: str | None = None,
                 max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES, fuel: int = DEFAULT_FUEL) -> None:
        from enforcer.policy.wasm_build import wasm_for

        self.revision = policy_set.revision
        self._opa_binary = opa_binary
        self._limits = {"max_memory_bytes": max_memory_bytes, "fuel": fuel}
        self.wasm = wasm if wasm is not None else wasm_for(policy_set.modules, opa_binary)
        self._policy = WasmPolicy(self.wasm, policy_set.data, **self._limits)

    def evaluate(self, policy_input: dict[str, Any]) -> Any:
        return self._policy.evaluate(policy_input)

    def derive(self, policy_set: PolicySet) -> WasmEngine:
        """An engine for a new policy set (hot reload); this one stays usable
        for the calls already evaluating on it."""
        return WasmEngine(policy_set, opa_binary=self._opa_binary, **self._limits)

    def close(self) -> None:
        pass
