"""Serving export: SavedModels for TF Serving (`savedmodel`) and TFLite files for LiteRT
(`tflite`), plus one library per export script (`export_savedmodel_lib`, `export_tflite_lib`).
Exported artifacts load without this package."""
