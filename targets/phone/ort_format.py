"""model.ort written the same way every time: ONNX Runtime's converter lays out one part of the file in hash order.

Where it sits: the last step of the phone target (targets/phone/__init__.py, ``_write_ort_format``). An ORT-format
file is a FlatBuffer: an ``InferenceSession`` table holding the ``Model`` and a ``KernelTypeStrResolver`` (which
argument of every operator binds which type string). ONNX Runtime serialises the resolver by iterating a hash map
whose order changes from run to run (even within one process), so the same model gives files that load identically
but differ in the bytes of that one table. :func:`canonical_ort` keeps everything else byte for byte and writes the
resolver again in sorted order, so that two builds of the same model give the same model.ort.

FlatBuffers are built back to front: ONNX Runtime writes the model first (the end of the file), then the resolver,
then the session table (the start). The model part refers only to itself with relative offsets, so it is copied as
one block to the end of a new buffer (same distance from the end, so the same alignment), and the resolver and the
session table are written in front of it.
"""
from __future__ import annotations

import flatbuffers
from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import (ArgTypeAndIndex, InferenceSession,
                                                                       KernelTypeStrArgsEntry, KernelTypeStrResolver,
                                                                       OpIdKernelTypeStrArgsEntry)

FILE_IDENTIFIER = b"ORTM"
SESSION_STATE_SLOT = 8  # the deprecated session_state field (vtable offset); edgekit's files never carry one
ALIGNMENT = 8  # the largest scalar in the schema (int64 dims, doubles)


def _resolver_entries(resolver) -> list[tuple[bytes, list[tuple[bytes, list[tuple[int, int]]]]]]:
    """The resolver as plain data: [(op id, [(kernel type string, [(arg type, arg index)])])], sorted by key."""
    ops = []
    for i in range(resolver.OpKernelTypeStrArgsLength()):
        op = resolver.OpKernelTypeStrArgs(i)
        kinds = []
        for j in range(op.KernelTypeStrArgsLength()):
            entry = op.KernelTypeStrArgs(j)
            args = [(entry.Args(k).ArgType(), entry.Args(k).Index()) for k in range(entry.ArgsLength())]
            kinds.append((entry.KernelTypeStr(), args))
        ops.append((op.OpId(), sorted(kinds)))
    return sorted(ops)


def _vector(builder: flatbuffers.Builder, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        builder.PrependUOffsetTRelative(off)
    return builder.EndVector()


def _write_resolver(builder: flatbuffers.Builder, ops) -> int:
    op_tables = []
    for op_id, kinds in ops:
        kind_tables = []
        for type_str, args in kinds:
            arg_tables = []
            for arg_type, index in args:
                ArgTypeAndIndex.Start(builder)
                ArgTypeAndIndex.AddArgType(builder, arg_type)
                ArgTypeAndIndex.AddIndex(builder, index)
                arg_tables.append(ArgTypeAndIndex.End(builder))
            args_vec = _vector(builder, arg_tables)
            name = builder.CreateString(type_str)
            KernelTypeStrArgsEntry.Start(builder)
            KernelTypeStrArgsEntry.AddKernelTypeStr(builder, name)
            KernelTypeStrArgsEntry.AddArgs(builder, args_vec)
            kind_tables.append(KernelTypeStrArgsEntry.End(builder))
        kinds_vec = _vector(builder, kind_tables)
        name = builder.CreateString(op_id)
        OpIdKernelTypeStrArgsEntry.Start(builder)
        OpIdKernelTypeStrArgsEntry.AddOpId(builder, name)
        OpIdKernelTypeStrArgsEntry.AddKernelTypeStrArgs(builder, kinds_vec)
        op_tables.append(OpIdKernelTypeStrArgsEntry.End(builder))
    ops_vec = _vector(builder, op_tables)
    KernelTypeStrResolver.Start(builder)
    KernelTypeStrResolver.AddOpKernelTypeStrArgs(builder, ops_vec)
    return KernelTypeStrResolver.End(builder)


def canonical_ort(data: bytes) -> bytes:
    """``data`` (an ORT-format file) with its kernel type string resolver in sorted order; ``data`` unchanged when
    the file is laid out in a way this function does not know (it then only loses reproducibility)."""
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER or len(data) % ALIGNMENT:
        return data
    session = InferenceSession.InferenceSession.GetRootAs(data, 0)
    model, resolver, version = session.Model(), session.KernelTypeStrResolver(), session.OrtVersion()
    if model is None or resolver is None or version is None or session._tab.Offset(SESSION_STATE_SLOT):
        return data
    # Fields after kernel_type_str_resolver (a newer ORT) would be lost by the rewrite: keep the file as it is.
    vtable = session._tab.Pos - flatbuffers.encode.Get(flatbuffers.packer.soffset, data, session._tab.Pos)
    fields = (flatbuffers.encode.Get(flatbuffers.packer.voffset, data, vtable) - 4) // 2
    if any(session._tab.Offset(4 + 2 * k) for k in range(4, fields)):
        return data
    # The model block: from the model table (or its vtable, written right before it) to the end of the file.
    model_pos = model._tab.Pos
    vtable_pos = model_pos - flatbuffers.encode.Get(flatbuffers.packer.soffset, data, model_pos)
    start = min(model_pos, vtable_pos)
    if not resolver._tab.Pos < start:
        return data
    block = data[start:]
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.minalign = ALIGNMENT
    builder.head -= len(block)
    builder.Bytes[builder.head:builder.head + len(block)] = block
    model_off = len(data) - model_pos  # builder offsets count from the end of the buffer
    resolver_off = _write_resolver(builder, _resolver_entries(resolver))
    version_off = builder.CreateString(version)
    InferenceSession.Start(builder)
    InferenceSession.AddOrtVersion(builder, version_off)
    InferenceSession.AddModel(builder, model_off)
    InferenceSession.AddKernelTypeStrResolver(builder, resolver_off)
    builder.Finish(InferenceSession.End(builder), file_identifier=FILE_IDENTIFIER)
    out = bytes(builder.Output())
    # The copy must hold the same model and resolver; anything else means the layout assumption was wrong.
    check = InferenceSession.InferenceSession.GetRootAs(out, 0)
    if bytes(out[-len(block):]) != block or check.OrtVersion() != version or \
            _resolver_entries(check.KernelTypeStrResolver()) != _resolver_entries(resolver) or \
            check.Model()._tab.Pos != len(out) - model_off:
        return data
    return out
