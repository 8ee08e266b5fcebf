"""Pure model-config logic: parsing config.pbtxt, Triton's auto-complete and validation, the
request spec of a completed config, version policies and batch inputs. No I/O beyond reading
the file it is handed, no serving state."""
