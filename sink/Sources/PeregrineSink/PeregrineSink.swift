// PeregrineSink: multi-ISP receiver emulation.
