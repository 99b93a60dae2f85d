"""Stage logic of latentatlas: plain functions over stores, plus the generators, labelers and methods they use."""
