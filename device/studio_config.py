"""The config struct Studio's C++ export generates for a custom block, from its parameters.json.

Facts from ../shared/docs/on-device.md: `typedef struct { ... } ei_dsp_config_<cppType>_t;` in
`model-parameters/model_metadata.h` with `uint32_t block_id; uint16_t implementation_version;
int axes;`, then (newer exports) `ei_dsp_named_axis_t *named_axes; size_t named_axes_size;`, then
one field per parameter in parameters.json order, named after `param` with '-' -> '_', typed int ->
int, float -> float, select and string -> const char *, boolean -> bool. Used to compile and check
the adapters as an export would; a user's export brings its own.
"""
from __future__ import annotations

C_TYPES = {"int": "int", "float": "float", "select": "const char *", "string": "const char *", "boolean": "bool"}


def parameter_fields(parameters_json: dict) -> list[tuple[str, str]]:
    """(C type, field name) per parameter, in parameters.json order."""
    fields = []
    for entry in parameters_json["parameters"]:
        for parameter in entry["items"] if "items" in entry else [entry]:
            fields.append((C_TYPES[parameter["type"]], parameter["param"].replace("-", "_")))
    return fields


def config_struct(parameters_json: dict, named_axes: bool = True) -> str:
    cpp_type = parameters_json["info"]["cppType"]
    lines = ["typedef struct {", "    uint32_t block_id;", "    uint16_t implementation_version;", "    int axes;"]
    if named_axes:
        lines += ["    ei_dsp_named_axis_t *named_axes;", "    size_t named_axes_size;"]
    lines += [f"    {c_type} {name};" for c_type, name in parameter_fields(parameters_json)]
    lines.append(f"}} ei_dsp_config_{cpp_type}_t;")
    return "\n".join(lines)


def model_metadata_header(parameters_jsons: list[dict], named_axes: bool = True) -> str:
    """A `model_metadata.h` holding the config structs of the given blocks."""
    parts = ["#ifndef _EI_CLASSIFIER_MODEL_METADATA_H_", "#define _EI_CLASSIFIER_MODEL_METADATA_H_", "",
             "#include <stdbool.h>", "#include <stddef.h>", "#include <stdint.h>", "",
             "typedef struct {", "    const char *name;", "    int axis;", "} ei_dsp_named_axis_t;", ""]
    parts += [config_struct(p, named_axes) + "\n" for p in parameters_jsons]
    parts.append("#endif")
    return "\n".join(parts) + "\n"
