"""The live camera classifier (`edge camera`): any artifact on a webcam, video file or demo video.

``cli`` is the command and ``options`` its options; ``session`` runs the capture -> preprocess -> infer
-> overlay loop; ``sources`` opens cameras and files (newest-frame policy, stall retries); ``outputs``
draws, records and logs; ``server`` serves the MJPEG page with live statistics; ``metrics`` holds the
figures and the result of a run; ``progress`` is the terminal's progress line and notices; ``demo``
writes the offline demo video; ``threads`` chooses the model's thread setting by measurement and
``thread_plan`` starts the runners for it; ``cache`` keeps the demo video and those choices in the user
cache (``$XDG_CACHE_HOME/edge-harness``).
OpenCV is imported inside the functions that need it.
"""
