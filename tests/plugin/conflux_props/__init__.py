"""A Conflux serializer plugin: flat ``key = value`` files, one entity a file, values written
as JSON (so numbers, lists and maps survive)."""

import json

from conflux.formats import FormatError, Serializer


class Properties(Serializer):
    name = "props"
    extensions = (".props",)

    def load(self, data, path):
        doc = {}
        for number, line in enumerate(data.decode().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep:
                raise FormatError(f"{path}:{number}: expected 'key = value'", path=path,
                                  line=number)
            value = value.strip()
            try:
                doc[key.strip()] = json.loads(value)
            except ValueError:
                doc[key.strip()] = value
        return [doc]

    def locate(self, data, index, key):
        for number, line in enumerate(data.decode().splitlines(), 1):
            if line.partition("=")[0].strip() == key:
                return number
        return None

    def dump(self, document):
        return "".join(f"{k} = {json.dumps(v, sort_keys=True)}\n"
                       for k, v in document.items()).encode()
