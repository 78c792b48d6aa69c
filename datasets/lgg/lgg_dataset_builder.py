"""TFDS builder ``lgg``: TCGA lower-grade glioma brain MRI slices with FLAIR abnormality masks (Kaggle's
``lgg-mri-segmentation``), grouped by patient.

Configs: ``tumor`` (label per slice: tumour in the mask or not) and ``histology`` (label per patient from
``histological_type`` in ``data.csv``; only slices with tumour; patients without a value are left out and recorded).
"""

import dataclasses

import tensorflow_datasets as tfds

from mtunet.data.manual import ManualBuilder, ManualConfig, Source, read_colour_pair, read_table, require

PAGE = "https://www.kaggle.com/datasets/mateuszbuda/lgg-mri-segmentation"
CASES = Source("kaggle_3m", "the Kaggle dataset mateuszbuda/lgg-mri-segmentation (archive.zip)", PAGE)
CLINICAL = Source("kaggle_3m/data.csv", "the Kaggle dataset mateuszbuda/lgg-mri-segmentation (archive.zip)", PAGE)

TUMOR_CLASSES = ["no_tumor", "tumor"]
# data.csv codes histological_type 1-3 and no page of the dataset's authors names them. The mapping was checked
# against the histology TCGA records for six of its patients (codes 1 and 3; 2 is TCGA's remaining LGG type):
# see "Histology codes" in datasets/lgg/README.md for the patients and sources.
HISTOLOGY_CODES = {1: "astrocytoma", 2: "oligoastrocytoma", 3: "oligodendroglioma"}


@dataclasses.dataclass
class LggConfig(ManualConfig):
    """``label``: ``"tumor"`` (per slice, from the mask) or ``"histology"`` (per patient, from data.csv)."""

    label: str = "tumor"


def patient_of(case: str) -> str:
    """The patient of a case folder: its name without the scan date, ``TCGA_CS_4941_19960909`` -> ``TCGA_CS_4941``."""
    return case.rsplit("_", 1)[0]


class Builder(ManualBuilder):
    """TCGA-LGG FLAIR MRI slices (3 channels: pre-contrast, FLAIR, post-contrast) with tumour masks."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Slices of 110 patients as downloaded (256x256), configs tumor and histology."}
    BUILDER_CONFIGS = [
        LggConfig(name="tumor", label="tumor", description="every slice; label: tumour in the mask or not"),
        LggConfig(name="histology", label="histology",
                  description="slices with tumour; label: the patient's histological type from data.csv"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Download archive.zip from {PAGE} (Kaggle account needed) and unzip it; give the folder that holds kaggle_3m/:
      kaggle_3m/<case>/<case>_<slice>.tif and <case>_<slice>_mask.tif   (<case> e.g. TCGA_CS_4941_19960909)
      kaggle_3m/data.csv                                                 (needed by the histology config)
    """

    def _class_names(self) -> list[str]:
        return TUMOR_CLASSES if self.builder_config.label == "tumor" else list(HISTOLOGY_CODES.values())

    def _histology(self, root) -> dict[str, str]:
        """``{patient: histological type}`` of the patients data.csv gives a known code for."""
        table = read_table(require(root, CLINICAL), ["Patient", "histological_type"], CLINICAL)
        histology = {}
        for patient, code in zip(table["Patient"], table["histological_type"]):
            try:
                histology[patient] = HISTOLOGY_CODES[int(float(code))]
            except (ValueError, KeyError):
                continue
        return histology

    def _find_examples(self, root):
        cases = require(root, CASES, folder=True)
        histology = self._histology(root) if self.builder_config.label == "histology" else None
        found = []
        for case in sorted(path for path in cases.iterdir() if path.is_dir()):
            patient = patient_of(case.name)
            if histology is not None and patient not in histology:
                self.leave_out(case.name, f"patient {patient} has no histological_type (1-3) in {CLINICAL.path}")
                continue
            slices = []
            for path in case.glob(f"{case.name}_*.tif"):
                number = path.stem[len(case.name) + 1:]
                if number.isdigit():
                    slices.append((int(number), path))
            for _, path in sorted(slices):
                mask = path.with_name(f"{path.stem}_mask.tif")
                if not mask.is_file():
                    self.leave_out(path.stem, f"no mask {case.name}/{mask.name}")
                    continue
                found.append((path.stem, {"image": path, "mask": mask, "patient": patient,
                                          "histology": None if histology is None else histology[patient]}))
        return found

    def _read_example(self, example_id, found):
        image, mask = read_colour_pair(found["image"], found["mask"], "TIFF", "TIFF")
        tumour = bool(mask.max() > 0)
        if found["histology"] is None:
            label = TUMOR_CLASSES[int(tumour)]
        elif tumour:
            label = found["histology"]
        else:
            return None
        return {"patient": found["patient"], "image": image, "mask": mask, "label": label}
