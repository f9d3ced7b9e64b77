//! The part of cubecl-llvm 0.11.3's interface that cubecl-cuda 0.11.3 uses, for builds that
//! compile CUDA kernels with NVRTC (cubecl-cuda's `cpp` backend) on machines that cannot
//! download LLVM. See README.md: the LLVM backend is refused with a compilation error, never
//! emulated.

use cubecl_core::ir::DeviceProperties;
use cubecl_core::prelude::KernelDefinition;
use cubecl_environment::backtrace::BackTrace;
use cubecl_runtime::compiler::CompilationError;
use cubecl_runtime::kernel::BufferIOAttr;

pub mod nvptx {
    pub mod ptx_version {
        use core::fmt;

        /// A PTX ISA version (8.7 is `87`). Only the LLVM backend emits PTX under a chosen
        /// version; NVRTC uses its toolkit's.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct PtxVersion(u32);

        impl PtxVersion {
            /// No version is chosen in this build: the NVRTC backend ignores it, and the LLVM
            /// backend it would configure is absent.
            pub fn for_driver(_driver: i32) -> Option<Self> {
                None
            }
        }

        impl fmt::Display for PtxVersion {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "ptx{}", self.0)
            }
        }
    }
}

pub mod shared {
    pub mod lowered_features {
        use super::super::DeviceProperties;

        /// Targets of the LLVM backend.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum GpuTarget {
            Nvptx,
        }

        /// cubecl-cuda calls this only when the LLVM backend is selected, which this build
        /// cannot run: the properties are left as the driver reported them.
        pub fn restrict_features(_props: &mut DeviceProperties, _target: GpuTarget) {}
    }
}

/// Targets of the LLVM backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LlvmTarget {
    #[default]
    Cpu,
    Nvptx,
}

/// Options of the LLVM backend (the fields cubecl-cuda sets).
#[derive(Clone, Debug, Default)]
pub struct PlironOptions {
    pub arch: Option<()>,
    pub sm_arch: Option<cubecl_core::ir::nvidia::SmArch>,
    pub ptx_version: Option<nvptx::ptx_version::PtxVersion>,
    pub grid_constants: bool,
}

/// A compiled NVPTX module (never produced in this build).
#[derive(Clone, Debug)]
pub struct NvptxModule {
    pub ptx: Vec<core::ffi::c_char>,
    pub entrypoint: String,
    pub ir: String,
    pub shared_memory_size: usize,
    pub io: Vec<BufferIOAttr>,
}

/// What the LLVM backend produces.
#[derive(Clone, Debug)]
pub enum PlironArtifact {
    NvptxCode(NvptxModule),
}

/// The LLVM backend's compiler: every compilation fails with an error that names the fix.
#[derive(Clone, Debug, Default)]
pub struct PlironCompiler {
    pub target: LlvmTarget,
}

impl PlironCompiler {
    /// The tag cubecl uses to name compiled artifacts of this backend.
    pub fn lang_tag(&self) -> &'static str {
        "llvm"
    }

    pub fn compile(
        &mut self,
        _kernel: KernelDefinition,
        _options: &PlironOptions,
    ) -> Result<PlironArtifact, CompilationError> {
        Err(CompilationError::Generic {
            reason: "this build has no LLVM backend (offline stand-in for cubecl-llvm); \
                     enable cubecl-cuda's `cpp` feature to compile with NVRTC"
                .to_string(),
            backtrace: BackTrace::capture(),
        })
    }
}
