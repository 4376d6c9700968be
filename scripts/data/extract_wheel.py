"""Extract one member of a wheel (a zip file) to a destination path.

usage: extract_wheel.py WHEEL MEMBER DEST

Writes DEST atomically (temp file + rename) so an interrupted run never leaves
a truncated file that a later idempotent run would mistake for a finished one.
Uses zipfile from the standard library: `unzip` may not be installed.
"""

import os
import shutil
import sys
import zipfile


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    wheel, member, dest = sys.argv[1:]
    try:
        zf = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as e:
        print(f"error: cannot open wheel {wheel}: {e}", file=sys.stderr)
        return 1
    with zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            names = "\n  ".join(n for n in zf.namelist() if not n.endswith("/"))
            print(f"error: {member} not found in {wheel}; it contains:\n  {names}", file=sys.stderr)
            return 1
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        tmp = f"{dest}.tmp.{os.getpid()}"
        try:
            with zf.open(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 16 << 20)  # zipfile verifies the CRC at EOF
            if os.path.getsize(tmp) != info.file_size:
                raise OSError(f"size mismatch: wrote {os.path.getsize(tmp)}, expected {info.file_size}")
            os.replace(tmp, dest)
        except BaseException as e:
            if os.path.exists(tmp):
                os.remove(tmp)
            if isinstance(e, Exception):
                print(f"error: extracting {member} from {wheel}: {e}", file=sys.stderr)
                return 1
            raise
    print(f"  extracted {member} -> {dest} ({info.file_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
