"""The live camera classifier (`edge camera`): any artifact on a webcam, video file or demo video.

``session`` runs the capture -> preprocess -> infer -> overlay loop and owns the CLI; ``sources``
opens cameras and files (newest-frame policy, stall retries); ``outputs`` draws, records and logs;
``server`` serves the MJPEG page with live statistics; ``demo`` writes the offline demo video.
OpenCV is imported inside the functions that need it.
"""
