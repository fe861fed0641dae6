"""One WebDataset shard read as samples: the tar's files grouped by key, with the checks
that keep every image. Every path that reads shards (caption data, image shards, the
cache and the stream pipelines, :mod:`simsiam.data.shards`) groups members here.

The grouping is webdataset's (``base_plus_ext``): a file's key is its name up to the
first dot of its base name, the rest its extension (``dir/000123.jpg`` -> key
``dir/000123``, extension ``jpg``), and a sample is a run of consecutive files with one
key. Files a reader of that rule would lose or misread are refused with a
:class:`~simsiam.errors.DataError` naming the shard, the files and the fix, before any
image is decoded (shards are indexed before a run starts, so these errors come before
training; no image is dropped silently):

* the files of one sample are not next to each other (``tar cf s.tar *.jpg *.txt``: every
  key is seen twice);
* a sample holds several images (``cat.0.jpg``, ``cat.1.jpg``: key ``cat``), or its only
  image has a dotted name (``photo.v2.jpg``: extension ``v2.jpg``, read as no image), or
  one file name is in the tar twice;
* the shard is cut short (it ends inside a file, or without the end-of-archive block), is
  damaged after a member (a header that is not one), or holds data after its end (two
  tars joined with ``cat``, whose second part tar readers skip). The message counts the
  samples read from it before the fault (and says when the last may lack files).
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

from simsiam.errors import DataError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_BLOCK = 512  # tar block size; the archive ends with zero blocks
_LISTED = 3  # files named in a message; the rest are counted


def _key_ext(name: str) -> tuple[str | None, str | None]:
    from webdataset.tariterators import base_plus_ext

    return base_plus_ext(name)


def _is_image(ext: str) -> bool:
    return ext.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(f"'{n}'" for n in names[:_LISTED]) + more


def _apart_error(shard: Path, key: str, first: tuple[int, str], again: tuple[int, str]
                 ) -> DataError:
    return DataError(
        f"WebDataset shard '{shard}': the files of sample '{key}' are not next to each "
        f"other ('{first[1]}' is member {first[0] + 1} and '{again[1]}' member "
        f"{again[0] + 1}, with other samples between): a sample is read from consecutive "
        "files, so its image and its caption or label would be read as two samples. Write "
        "the tar with each sample's files together, in name order: `tar --sort=name -cf "
        f"{shard.name} -C FOLDER .` (GNU tar; files listed on the command line, as in `tar "
        "cf s.tar *.jpg *.txt`, keep the order given), or for an image folder `simsiam "
        "shard FOLDER OUT`")


def _twice_error(shard: Path, first: str, again: tuple[int, str]) -> DataError:
    what = (f"'{first}' twice" if first == again[1] else
            f"'{first}' and '{again[1]}', one extension of one sample")
    return DataError(f"WebDataset shard '{shard}' holds {what} (the second is member "
                     f"{again[0] + 1}): the later would replace the earlier, which would be "
                     "lost; keep one and write the tar again")


def _image_error(shard: Path, key: str, names: dict[str, str]) -> DataError | None:
    """The error for a sample whose images cannot be read one per sample, else None."""
    images = [n for e, n in names.items() if _is_image(e)]
    dotted = [n for e, n in names.items() if _is_image(e) and "." in e]
    if len(images) > 1:
        what = f"holds {len(images)} images ({_listed(images)}), and a sample is one image"
    elif dotted:
        what = (f"holds its image under a dotted name ('{dotted[0]}': extension "
                f"'{dotted[0][len(key) + 1:]}', which is no image extension)")
    else:
        return None
    why = (": a file's sample key is its name up to the first dot, so names with a dot "
           "before the extension (cat.0.jpg, cat.1.jpg) fall into one sample (key 'cat')"
           if dotted else "")
    return DataError(
        f"WebDataset shard '{shard}': sample '{key}' {what}{why}. Give each image a key of "
        "its own without dots, its caption or label beside it (cat_0.jpg with cat_0.txt, "
        "cat_1.jpg with cat_1.txt), and write the tar again")


def _cut_error(shard: Path, where: str, read: int, last: str | None, partial: bool
               ) -> DataError:
    """The error for a shard cut short or damaged at ``where``, ``read`` samples read."""
    tail = "" if last is None else (f" (the last, '{last}', may lack files that were cut off)"
                                    if partial else f" (the last '{last}')")
    return DataError(
        f"WebDataset shard '{shard}' {where}; {read:,} samples were read from it before "
        f"that{tail}. Write or download it again (or leave it out of the pattern) so that "
        "no sample of it is lost")


def _end_error(shard: Path, end: int, size: int, after: str | None, read: int,
               last: str | None) -> DataError | None:
    """The error when the tar does not end properly at byte ``end`` (where a reader
    stopped, after member ``after``): fewer than one zero block left, a damaged header,
    or data after the end; ``read`` samples were read, the last ``last``."""
    behind = "" if after is None else f" after member '{after}'"
    with open(shard, "rb") as f:
        f.seek(end)
        block = f.read(_BLOCK)
        if len(block) < _BLOCK:
            return _cut_error(shard, f"is cut short: it ends at byte {size:,}{behind}, "
                              "without the end-of-archive block", read, last, True)
        if block.strip(b"\0"):
            return _cut_error(shard, f"is damaged: byte {end:,}{behind} holds no valid tar "
                              "header", read, last, True)
        while chunk := f.read(1 << 20):
            if chunk.strip(b"\0"):
                return _cut_error(shard, f"holds data after its end (byte {end:,} of "
                                  f"{size:,}: two tars joined with `cat`?), which tar readers "
                                  "skip", read, last, False)
    return None


def tar_samples(shard: Path) -> Iterator[dict]:
    """The samples of one shard, in order (see the module docstring for the grouping).

    Each sample maps ``__key__`` to its key, each extension (lower case) to the file's
    bytes, and ``__where__`` each extension to ``(byte offset of its data in the tar,
    size in bytes)``, for reading it again without the others. Directories, links and
    files without an extension or named ``__*`` are passed over.

    Raises:
        DataError: the shard cannot be read, is cut short or damaged, or holds files the
            grouping would lose (see the module docstring); each names the shard, the
            files and the fix. Samples yielded before such an error are whole.
    """
    done, last = 0, None  # samples yielded, the last one's key
    seen: dict[str, tuple[int, str]] = {}  # key -> (member number, file name)
    sample: dict | None = None
    names: dict[str, str] = {}  # the current sample's extension -> file name
    size, reach, after = 0, 0, None  # shard bytes; where the last member's data ends; its name
    try:
        size = shard.stat().st_size
        with tarfile.open(shard, mode="r:") as tar:
            for number, member in enumerate(tar):
                reach = member.offset_data + -(-member.size // _BLOCK) * _BLOCK
                after = member.name
                if not member.isreg():
                    continue
                key, ext = _key_ext(member.name)
                if key is None or ext is None or member.name.startswith("__"):
                    continue
                if sample is None or sample["__key__"] != key:
                    if sample is not None:
                        if (err := _image_error(shard, sample["__key__"], names)) is not None:
                            raise err
                        yield sample
                        done, last = done + 1, sample["__key__"]
                    if key in seen:
                        raise _apart_error(shard, key, seen[key], (number, member.name))
                    seen[key] = (number, member.name)
                    sample, names = {"__key__": key, "__where__": {}}, {}
                ext = ext.lower()
                if ext in names:
                    raise _twice_error(shard, names[ext], (number, member.name))
                if member.offset_data + member.size > size:
                    raise _cut_error(shard, f"is cut short: it ends at byte {size:,}, inside "
                                     f"'{member.name}' (which needs {member.size:,} bytes "
                                     f"from byte {member.offset_data:,})", done, last, False)
                handle = tar.extractfile(member)
                sample[ext] = handle.read() if handle is not None else b""
                sample["__where__"][ext] = (member.offset_data, member.size)
                names[ext] = member.name
            end = tar.offset
        pending = None if sample is None else sample["__key__"]
        err = _end_error(shard, end, size, after, done + (sample is not None), pending)
    except (OSError, tarfile.TarError, EOFError) as exc:  # damaged or unreadable
        if size and reach > size:
            raise _cut_error(shard, f"is cut short: it ends at byte {size:,}, inside "
                             f"'{after}'", done, last, False) from exc
        raise DataError(f"cannot read WebDataset shard '{shard}': {type(exc).__name__}: "
                        f"{exc}; check that it is a whole tar file (write or download it "
                        "again)") from exc
    if err is not None:
        raise err
    if sample is not None:
        if (err := _image_error(shard, sample["__key__"], names)) is not None:
            raise err
        yield sample
