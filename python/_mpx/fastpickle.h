/* A fast pickle protocol 5 encoder/decoder for a subset of plain Python objects.
 *
 * mpx_fastpickle_dumps() writes a legal pickle stream (pickle.loads of it gives an equal
 * object) for None, bool, int (within [-2**63, 2**64)), float, str, bytes, and tuple, list,
 * dict, set and frozenset of those, exact types only, each container appearing at most once
 * in the object graph and nested at most 64 deep. It never memoizes; anything else is
 * "not handled" and the caller uses pickle.dumps.
 *
 * mpx_fastpickle_loads() accepts only the opcodes the encoder emits, with the same
 * structural limits, and refuses anything else ("not handled"), so the caller can fall back
 * to pickle.loads. It validates every length and never reads out of bounds.
 */
#ifndef MPX_FASTPICKLE_H
#define MPX_FASTPICKLE_H

#ifndef PY_SSIZE_T_CLEAN
#define PY_SSIZE_T_CLEAN
#endif
#include <Python.h>

/* Encodes obj as a pickle protocol-5 stream into a new bytes object. Returns the bytes,
 * or NULL with NO exception set when obj is outside the supported subset (the caller
 * then uses pickle.dumps), or NULL with an exception set on a real error (MemoryError). */
PyObject *mpx_fastpickle_dumps(PyObject *obj);

/* Decodes a stream produced by mpx_fastpickle_dumps. Returns the object, or NULL with NO
 * exception set if the stream uses anything the encoder never emits (the caller then
 * uses pickle.loads), or NULL with an exception set on a real error (MemoryError). Never
 * reads outside data[0..len). */
PyObject *mpx_fastpickle_loads(const char *data, Py_ssize_t len);

/* Testing entry points, meant for the module method table as _fast_dumps (METH_O) and
 * _fast_loads (METH_O, any bytes-like object). Both return NotImplemented when the value
 * or the stream is not handled. */
PyObject *mpx_fastpickle_test_dumps(PyObject *module, PyObject *obj);
PyObject *mpx_fastpickle_test_loads(PyObject *module, PyObject *data);

#endif
