"""absl flag parsers of the scripts' flags (`vqvae_tf.cli` defines the flags)."""

from __future__ import annotations

from absl import flags


class IntListParser(flags.ArgumentParser):
    """A comma-separated list of integers ("8,5,5,5") -> tuple of ints."""

    syntactic_help = "a comma-separated list of integers"

    def parse(self, argument):
        if isinstance(argument, (list, tuple)):
            return tuple(int(v) for v in argument)
        try:
            return tuple(int(v) for v in str(argument).split(",") if v.strip())
        except ValueError:
            raise ValueError(f"expected integers separated by commas, got {argument!r}") from None

    def flag_type(self):
        return "int list"


class JitCompileParser(flags.ArgumentParser):
    """true / false / auto (--jit_compile and --nojit_compile also work, as for a bool flag)."""

    syntactic_help = "true, false or auto"

    def parse(self, argument):
        if isinstance(argument, bool):
            return argument
        value = str(argument).strip().lower()
        if value in ("true", "t", "1", "auto", "false", "f", "0"):
            return "auto" if value == "auto" else value in ("true", "t", "1")
        raise ValueError(f"expected true, false or auto, got {argument!r}")

    def flag_type(self):
        return "bool or auto"


class JitCompileFlag(flags.Flag):
    """A bool flag that also takes "auto" (and writes it back as --jit_compile=auto to flags.txt)."""

    def _serialize(self, value):
        return f"--{self.name}=auto" if value == "auto" else super()._serialize(value)
