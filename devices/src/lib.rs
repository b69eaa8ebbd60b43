//! Emulated devices: `legacy` (serial, i8042, RTC), `pci` and `virtio`. Devices know
//! nothing of the orchestrator: they take guest memory and an interrupt trigger.
