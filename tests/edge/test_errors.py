"""edge/errors.py: the one-line messages for OSErrors and missing optional packages."""

import errno

from edge.errors import missing_module_line, os_error_line


def test_os_error_lines():
    assert os_error_line(PermissionError(errno.EACCES, "Permission denied", "/x")) == "/x: permission denied"
    assert os_error_line(OSError(errno.EROFS, "Read-only file system", "/x", None, "/y")) == "/x -> /y: read-only file system"
    assert os_error_line(OSError(errno.ENOSPC, "No space left on device")) == (
        "no space left on device (free some space or write elsewhere)"
    )
    assert os_error_line(OSError("a library's own words")) == "a library's own words"
    written = OSError(errno.EDQUOT, "Disk quota exceeded", "/x")
    written.edge_action = "write"
    assert os_error_line(written).startswith("cannot write /x: disk quota exceeded")


def test_missing_module_lines_name_the_extra():
    line = missing_module_line(ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib"), "edge bench")
    assert line == (
        "edge bench needs the Python package 'matplotlib', which is not installed: "
        "pip install -e '.[train]' in the clone (or `make install EXTRAS=...,train`)"
    )
    assert "opencv-python" in missing_module_line(ModuleNotFoundError(name="cv2"))
    assert "[cpu]" in missing_module_line(ModuleNotFoundError(name="onnxruntime.quantization"))
    assert missing_module_line(ModuleNotFoundError(name="edge.nonexistent")) is None
