"""Code lookups for ImagingStudy: body site, laterality and modality display.

Pure data; nothing is read or fetched at import time apart from pydicom's bundled concept tables.

Sources:

* Body site: DICOM PS3.16 Annex L, Table L-1 "Correspondence of Anatomic Region Codes and Body
  Part Examined Defined Terms"
  (https://dicom.nema.org/medical/dicom/current/output/chtml/part16/chapter_L.html), with the
  code Table L-1 gives each term, keeping only the terms whose code is a SNOMED CT concept
  pydicom ships (``pydicom.sr.codedict.codes.SCT``). That takes in the regions of CID 4031
  "Common Anatomic Region"
  (https://dicom.nema.org/medical/dicom/current/output/chtml/part16/sect_CID_4031.html), the
  organs, vessels and other rows of CID 4 "Anatomic Region", the veterinary rows of CID 7483
  "Common Anatomic Regions for Animals", and the older terms ARM and LEG. Every display is a
  code meaning pydicom has for that code (how one is chosen is noted at the tables).
* Laterality for FHIR R4: the value set http://hl7.org/fhir/ValueSet/bodysite-laterality that
  R4 binds to ``ImagingStudy.series.laterality``.
* Laterality for FHIR R5: DICOM CID 244 "Laterality"
  (https://dicom.nema.org/medical/dicom/current/output/chtml/part16/sect_CID_244.html), as in
  pydicom's ``codes.cid244``.
* Modality display: the DCM code meanings of CID 29 "Acquisition Modality" and CID 33
  "Modality", as in pydicom's ``codes.cid29`` and ``codes.cid33``.
"""

from __future__ import annotations

import re
from typing import Final

from pydicom.sr.codedict import codes

from listener.fhir.common import SNOMED_SYSTEM

# Body Part Examined (0018,0015) defined term -> SNOMED CT (code, display), after Table L-1.
# These are the rows whose code is a CID 4031 concept; each display is that concept's CID 4031
# meaning. A few terms share a code: Table L-1 lists THORAX beside CHEST, the ENDO* terms (a
# transducer inside the organ) beside the organ, and the older ARM and LEG beside UPPERARM and
# LOWERLEG.
_CID_4031_ROWS: Final[dict[str, tuple[str, str]]] = {
    "ABDOMEN": ("818981001", "Abdomen"),
    "ABDOMENPELVIS": ("818982008", "Abdomen and Pelvis"),
    "ACJOINT": ("85856004", "Acromioclavicular joint"),
    "ANKLE": ("70258002", "Ankle joint"),
    "ARM": ("40983000", "Upper arm"),
    "BILEDUCT": ("28273000", "Bile duct"),
    "BILIARYTRACT": ("34707002", "Biliary tract"),
    "BLADDER": ("89837001", "Bladder"),
    "BREAST": ("76752008", "Breast"),
    "BRONCHUS": ("955009", "Bronchus"),
    "CALCANEUS": ("80144004", "Calcaneus"),
    "CHEST": ("816094009", "Chest"),
    "CHESTABDOMEN": ("416550000", "Chest and Abdomen"),
    "CHESTABDPELVIS": ("416775004", "Chest, Abdomen and Pelvis"),
    "CLAVICLE": ("51299004", "Clavicle"),
    "COCCYX": ("64688005", "Coccyx"),
    "COLON": ("71854001", "Colon"),
    "COMMONBILEDUCT": ("79741001", "Common bile duct"),
    "CSPINE": ("122494005", "Cervical spine"),
    "CTSPINE": ("1217257000", "Cervico-thoracic spine"),
    "DUODENUM": ("38848004", "Duodenum"),
    "ELBOW": ("16953009", "Elbow joint"),
    "ENDOCARDIAC": ("80891009", "Heart"),
    "ENDOESOPHAGEAL": ("32849002", "Esophagus"),
    "ENDORECTAL": ("34402009", "Rectum"),
    "ENDOURETERIC": ("87953007", "Ureter"),
    "ENDOURETHRAL": ("13648007", "Urethra"),
    "ESOPHAGUS": ("32849002", "Esophagus"),
    "EXTREMITY": ("66019005", "Extremity"),
    "EYE": ("81745001", "Eye"),
    "FEMUR": ("71341001", "Femur"),
    "FIBULA": ("87342007", "Fibula"),
    "FINGER": ("7569003", "Finger"),
    "FOOT": ("56459004", "Foot"),
    "FOREARM": ("14975008", "Forearm"),
    "GALLBLADDER": ("28231008", "Gallbladder"),
    "HAND": ("85562004", "Hand"),
    "HEAD": ("69536005", "Head"),
    "HEADNECK": ("774007", "Head and Neck"),
    "HEART": ("80891009", "Heart"),
    "HIP": ("24136001", "Hip joint"),
    "HUMERUS": ("85050009", "Humerus"),
    "IAC": ("361078006", "Internal Auditory Canal"),
    "ILEUM": ("34516001", "Ileum"),
    "ILIUM": ("22356005", "Ilium"),
    "JAW": ("661005", "Jaw region"),
    "JEJUNUM": ("21306003", "Jejunum"),
    "KNEE": ("72696002", "Knee"),
    "LARGEINTESTINE": ("14742008", "Large intestine"),
    "LARYNX": ("4596009", "Larynx"),
    "LEG": ("30021000", "Lower leg"),
    "LOWERLEG": ("30021000", "Lower leg"),
    "LOWERLIMB": ("61685007", "Lower limb"),
    "LSPINE": ("122496007", "Lumbar spine"),
    "LSSPINE": ("1217253001", "Lumbo-sacral spine"),
    "MANDIBLE": ("91609006", "Mandible"),
    "MASTOID": ("59066005", "Mastoid bone"),
    "MAXILLA": ("70925003", "Maxilla"),
    "MEDIASTINUM": ("72410000", "Mediastinum"),
    "NECK": ("45048000", "Neck"),
    "NECKCHEST": ("417437006", "Neck and Chest"),
    "NECKCHESTABDOMEN": ("416152001", "Neck, Chest and Abdomen"),
    "NECKCHESTABDPELV": ("416319003", "Neck, Chest, Abdomen and Pelvis"),
    "OPTICCANAL": ("55024004", "Optic canal"),
    "ORBIT": ("363654007", "Orbital structure"),
    "PANCBILEDUCT": ("110621006", "Pancreatic duct and bile duct systems"),
    "PANCREAS": ("15776009", "Pancreas"),
    "PANCREATICDUCT": ("69930009", "Pancreatic duct"),
    "PAROTID": ("45289007", "Parotid gland"),
    "PATELLA": ("64234005", "Patella"),
    "PELVIS": ("816092008", "Pelvis"),
    "PELVISLOWEXTREMT": ("1231522001", "Pelvis and lower extremities"),
    "PHANTOM": ("706342009", "Phantom"),
    "PROSTATE": ("41216001", "Prostate"),
    "RECTUM": ("34402009", "Rectum"),
    "RIB": ("113197003", "Rib"),
    "SCAPULA": ("79601000", "Scapula"),
    "SCJOINT": ("7844006", "Sternoclavicular joint"),
    "SELLA": ("42575006", "Sella turcica"),
    "SESAMOID": ("58742003", "Sesamoid bones of foot"),
    "SHOULDER": ("16982005", "Shoulder"),
    "SIJOINT": ("39723000", "Sacroiliac joint"),
    "SKULL": ("89546000", "Skull"),
    "SMALLINTESTINE": ("30315005", "Small intestine"),
    "SPINE": ("421060004", "Spine"),
    "SSPINE": ("54735007", "Sacrum"),
    "STERNUM": ("56873002", "Sternum"),
    "STOMACH": ("69695003", "Stomach"),
    "SUBMANDIBULAR": ("54019009", "Submandibular gland"),
    "THIGH": ("68367000", "Thigh"),
    "THORAX": ("816094009", "Chest"),
    "THUMB": ("76505004", "Thumb"),
    "TLSPINE": ("1217256009", "Thoraco-lumbar spine"),
    "TMJ": ("53620006", "Temporomandibular joint"),
    "TOE": ("29707007", "Toe"),
    "TRACHEA": ("44567001", "Trachea"),
    "TSPINE": ("122495006", "Thoracic spine"),
    "UPPERARM": ("40983000", "Upper arm"),
    "UPPERLIMB": ("53120007", "Upper limb"),
    "UPRURINARYTRACT": ("431491007", "Upper urinary tract"),
    "URETER": ("87953007", "Ureter"),
    "URETHRA": ("13648007", "Urethra"),
    "WHOLEBODY": ("38266002", "Entire body"),
    "WRIST": ("74670003", "Wrist joint"),
    "ZYGOMA": ("13881006", "Zygoma"),
}

# The other rows of Table L-1 whose code pydicom knows: organs, vessels, regions and the ENDO*
# terms of CID 4, the veterinary regions of CID 7483, and CARDIOVASCSYS (a later CID 4031 row
# that pydicom's CID 4031 does not hold yet). None of these codes is in pydicom's CID 4031. The
# display is the meaning Table L-1 gives when pydicom has that meaning for the code, otherwise
# pydicom's meaning in CID 4 (CID 7483 for the veterinary rows), otherwise the one meaning
# pydicom lists in any context group, otherwise the SNOMED CT fully specified name that is
# pydicom's only meaning for the code (CALF, CULDESAC, GESTSAC, ...). Terms that share a code
# share its display: ENDOARTERIAL, ENDORENAL, ENDOVAGINAL and ENDOVENOUS use the meaning of
# ARTERY, KIDNEY, VAGINA and VEIN, GLUTEAL that of BUTTOCK and SUPRAPUBIC that of HYPOGASTRIC.
_OTHER_ROWS: Final[dict[str, tuple[str, str]]] = {
    "3RDVENTRICLE": ("49841001", "Third ventricle"),
    "4THVENTRICLE": ("35918002", "Fourth Ventricle"),
    "ABDOMINALAORTA": ("7832008", "Abdominal aorta"),
    "ACA": ("60176003", "Anterior Cerebral Artery"),
    "ADRENAL": ("23451007", "Adrenal gland"),
    "AMNIOTICFLUID": ("77012006", "Amniotic fluid (substance)"),
    "ANTCARDIACV": ("194996006", "Anterior cardiac vein"),
    "ANTCOMMA": ("8012006", "Anterior communicating artery"),
    "ANTECUBITALV": ("128553008", "Antecubital vein"),
    "ANTSPINALA": ("17388009", "Anterior spinal artery"),
    "ANTTIBIALA": ("68053000", "Anterior tibial artery"),
    "ANUSRECTUMSIGMD": ("110612005", "Anus, rectum and sigmoid colon"),
    "AORTA": ("15825003", "Aorta"),
    "AORTICARCH": ("57034009", "Aortic arch"),
    "APPENDIX": ("66754008", "Appendix"),
    "ARTERY": ("51114001", "Artery"),
    "ASCAORTA": ("54247002", "Ascending aorta"),
    "ASCENDINGCOLON": ("9040008", "Ascending colon"),
    "ATLANTOAXIAL": ("62555009", "Atlantal-axial joint"),
    "ATLANTOOCCIPITAL": ("20292002", "Atlanto-occipital joint"),
    "AXILLA": ("91470000", "Axilla"),
    "AXILLARYA": ("67937003", "Axillary Artery"),
    "AXILLARYV": ("68705008", "Axillary vein"),
    "AZYGOSVEIN": ("72107004", "Azygos vein"),
    "BACK": ("77568009", "Back"),
    "BASILARA": ("59011009", "Basilar artery"),
    "BLADDERURETHRA": ("110837003", "Bladder and urethra"),
    "BRACHIALA": ("17137000", "Brachial artery"),
    "BRACHIALV": ("20115005", "Brachial vein"),
    "BRAIN": ("12738006", "Brain"),
    "BULB": ("21479005", "Carotid Bulb"),
    "BUTTOCK": ("46862004", "Buttock"),
    "CALF": ("53840002", "Structure of calf of leg (body structure)"),
    "CARDIOVASCSYS": ("113257007", "Cardiovascular system"),
    "CAROTID": ("69105007", "Carotid Artery"),
    "CARPUS": ("8205005", "Carpus"),
    "CCA": ("32062004", "Common carotid artery"),
    "CELIACA": ("57850000", "Truncus coeliacus"),
    "CEPHALICV": ("20699002", "Cephalic vein"),
    "CEREBELLUM": ("113305005", "Cerebellum"),
    "CEREBHEMISPHERE": ("372073000", "Cerebral hemisphere"),
    "CEREBRALA": ("88556005", "Cerebral artery"),
    "CERVIX": ("71252005", "Cervix"),
    "CFA": ("181347005", "Common Femoral Artery"),
    "CFV": ("397363009", "Common Femoral Vein"),
    "CHEEK": ("60819002", "Cheek"),
    "CHOROIDPLEXUS": ("80621003", "Structure of choroid plexus (body structure)"),
    "CIRCLEOFWILLIS": ("11279006", "Circle of Willis"),
    "COMILIACA": ("73634005", "Common iliac artery"),
    "COMILIACV": ("46027005", "Common iliac vein"),
    "CORNEA": ("28726007", "Cornea"),
    "CORONARYARTERY": ("41801008", "Coronary artery"),
    "CORONARYSINUS": ("90219004", "Coronary sinus"),
    "CULDESAC": ("53843000", "Structure of rectouterine pouch (body structure)"),
    "DESCAORTA": ("281130003", "Descending aorta"),
    "DESCENDINGCOLON": ("32622004", "Descending colon"),
    "DIGIT": ("82680008", "Digit"),
    "EAC": ("84301002", "External auditory canal"),
    "EAR": ("117590005", "Ear"),
    "ECA": ("22286001", "External carotid artery"),
    "ENDOARTERIAL": ("51114001", "Artery"),
    "ENDOMETRIUM": ("2739003", "Endometrium"),
    "ENDONASAL": ("53342003", "Endo-nasal"),
    "ENDONASOPHARYNYX": ("18962004", "Endo-nasopharyngeal"),
    "ENDORENAL": ("64033007", "Kidney"),
    "ENDOVAGINAL": ("76784001", "Vagina"),
    "ENDOVASCULAR": ("59820001", "Endo-vascular"),
    "ENDOVENOUS": ("29092000", "Vein"),
    "ENDOVESICAL": ("48367006", "Endo-vesical"),
    "EPIDIDYMIS": ("87644002", "Epididymis"),
    "EPIGASTRIC": ("27947004", "Epigastric region"),
    "EXTILIACA": ("113269004", "External iliac artery"),
    "EXTILIACV": ("63507001", "External iliac vein"),
    "EXTJUGV": ("71585003", "External jugular vein"),
    "EYELID": ("80243003", "Eyelid"),
    "FACE": ("89545001", "Face"),
    "FACIALA": ("23074001", "Facial artery"),
    "FEMORALA": ("7657000", "Femoral artery"),
    "FEMORALV": ("83419000", "Femoral vein"),
    "FLANK": ("58602004", "Flank"),
    "FONTANEL": ("79361005", "Fontanel of skull"),
    "FOREFETLOCK": ("13190002", "Fetlock of forelimb"),
    "FOREFOOT": ("419176008", "Forefoot"),
    "FORENAVICULAR": ("30518006", "Navicular of forefoot"),
    "FOREPASTERN": ("31329001", "Pastern of forefoot"),
    "FRONTALSINUS": ("55060009", "Frontal sinus"),
    "GASTRICV": ("110568007", "Gastric vein"),
    "GENICULARA": ("128559007", "Genicular artery"),
    "GESTSAC": ("300571009", "Finding of gestational sac (finding)"),
    "GLUTEAL": ("46862004", "Buttock"),
    "GSV": ("60734001", "Great saphenous vein"),
    "HEPATICA": ("76015000", "Hepatic artery"),
    "HEPATICV": ("8993003", "Hepatic vein"),
    "HINDFETLOCK": ("113351006", "Fetlock of hindlimb"),
    "HINDFOOT": ("416804009", "Hindfoot"),
    "HINDNAVICULAR": ("75772009", "Navicular of hindfoot"),
    "HINDPASTERN": ("18525008", "Pastern of hindfoot"),
    "HYPOGASTRIC": ("11708003", "Hypogastric region"),
    "HYPOPHARYNX": ("81502006", "Hypopharynx"),
    "ICA": ("86117002", "Internal carotid artery"),
    "ILIACA": ("10293006", "Iliac artery"),
    "ILIACV": ("244411005", "Iliac vein"),
    "INFMESA": ("33795007", "Inferior mesenteric artery"),
    "INFVENACAVA": ("64131007", "Inferior vena cava"),
    "INGUINAL": ("26893007", "Inguinal region"),
    "INNOMINATEA": ("12691009", "Innominate artery"),
    "INNOMINATEV": ("8887007", "Innominate vein"),
    "INTILIACA": ("90024005", "Internal iliac artery"),
    "INTJUGULARV": ("12123001", "Internal jugular vein"),
    "INTMAMMARYA": ("69327007", "Internal mammary artery"),
    "INTRACRANIAL": ("1101003", "Intracranial"),
    "JOINT": ("39352004", "Joint"),
    "KIDNEY": ("64033007", "Kidney"),
    "LACRIMALA": ("59749000", "Lacrimal artery"),
    "LATRIUM": ("82471001", "Left atrium"),
    "LATVENTRICLE": ("66720007", "Lateral Ventricle"),
    "LEGS": ("42694008", "All legs"),
    "LFEMORALA": ("113270003", "Left femoral artery"),
    "LHEPATICV": ("273202007", "Left Hepatic Vein"),
    "LHYPOCHONDRIAC": ("133945003", "Left hypochondriac region"),
    "LINGUALA": ("113264009", "Lingual artery"),
    "LINGUINAL": ("85119005", "Left inguinal region"),
    "LIVER": ("10200004", "Liver"),
    "LLQ": ("68505006", "Left lower quadrant of abdomen"),
    "LLUMBAR": ("1017210004", "Left lumbar region"),
    "LPORTALV": ("70253006", "Left Main Branch of Portal Vein"),
    "LPULMONARYA": ("50408007", "Left pulmonary artery"),
    "LSUPPULMONARYV": ("43863001", "Superior left pulmonary vein"),
    "LUMBAR": ("52612000", "Lumbar region"),
    "LUMBARA": ("34635009", "Lumbar artery"),
    "LUMEN": ("91747007", "Lumen of blood vessel"),
    "LUNG": ("39607008", "Lung"),
    "LUQ": ("86367003", "Left upper quadrant of abdomen"),
    "LVENTRICLE": ("87878005", "Left ventricle"),
    "MCA": ("17232002", "Middle Cerebral Artery"),
    "MESENTRICA": ("86570000", "Mesenteric artery"),
    "MESENTRICV": ("128583004", "Mesenteric vein"),
    "METACARPUS": ("36455000", "Metacarpus"),
    "METATARSUS": ("280711000", "Metatarsus"),
    "MIDHEPATICV": ("273099000", "Middle Hepatic Vein"),
    "MORISONSPOUCH": ("243977002", "Rutherford Morrison's pouch (body structure)"),
    "MOUTH": ("123851003", "Mouth"),
    "NASOPHARYNX": ("360955006", "Nasopharynx"),
    "NOSE": ("45206002", "Nose"),
    "OCCIPTALV": ("32114007", "Occipital vein"),
    "OCCPITALA": ("31145008", "Occipital artery"),
    "OPHTHALMICA": ("53549008", "Ophthalmic artery"),
    "OVARY": ("15497006", "Ovary"),
    "PARASTERNAL": ("91691001", "Parasternal"),
    "PARATHYROID": ("111002", "Parathyroid"),
    "PCA": ("70382005", "Posterior Cerebral Artery"),
    "PENILEA": ("282044005", "Structure of penile artery (body structure)"),
    "PENIS": ("18911002", "Penis"),
    "PERINEUM": ("38864007", "Perineum"),
    "PERONEALA": ("8821006", "Peroneal artery"),
    "PHARYNX": ("54066008", "Pharynx"),
    "PHARYNXLARYNX": ("312535008", "Pharynx and larynx"),
    "PLACENTA": ("78067005", "Placenta"),
    "POPLITEALA": ("43899006", "Popliteal artery"),
    "POPLITEALFOSSA": ("32361000", "Popliteal fossa"),
    "POPLITEALV": ("56849005", "Popliteal Vein"),
    "PORTALV": ("32764006", "Portal vein"),
    "POSCOMMA": ("43119007", "Posterior communication artery"),
    "POSTIBIALA": ("13363002", "Posterior tibial artery"),
    "PROFFEMA": ("31677005", "Profunda Femoris Artery"),
    "PROFFEMV": ("23438002", "Profunda Femoris Vein"),
    "PULMONARYA": ("81040000", "Pulmonary artery"),
    "PULMONARYV": ("122972007", "Pulmonary vein"),
    "RADIALA": ("45631007", "Radial artery"),
    "RADIUS": ("62413002", "Radius"),
    "RADIUSULNA": ("110535000", "Radius and ulna"),
    "RATRIUM": ("73829009", "Right atrium"),
    "RENALA": ("2841007", "Renal artery"),
    "RENALV": ("56400007", "Renal vein"),
    "RETROPERITONEUM": ("82849001", "Retroperitoneum"),
    "RFEMORALA": ("69833005", "Right femoral artery"),
    "RHEPATICV": ("272998002", "Right Hepatic Vein"),
    "RHYPOCHONDRIAC": ("133946002", "Right hypochondriac region"),
    "RINGUINAL": ("37117007", "Right inguinal region"),
    "RLQ": ("48544008", "Right lower quadrant of abdomen"),
    "RLUMBAR": ("1017211000", "Right lumbar region"),
    "RPORTALV": ("73931004", "Right Main Branch of Portal Vein"),
    "RPULMONARYA": ("78480002", "Right pulmonary artery"),
    "RSUPPULMONARYV": ("8629005", "Superior right pulmonary vein"),
    "RUQ": ("50519007", "Right upper quadrant of abdomen"),
    "RVENTRICLE": ("53085002", "Right ventricle"),
    "SAPHENOUSV": ("362072009", "Saphenous vein"),
    "SCALP": ("41695006", "Scalp"),
    "SCLERA": ("18619003", "Sclera"),
    "SCROTUM": ("20233005", "Scrotum"),
    "SEMVESICLE": ("64739004", "Seminal Vesicle"),
    "SFA": ("181349008", "Superficial Femoral Artery"),
    "SFJ": ("128587003", "Saphenofemoral junction"),
    "SFV": ("397364003", "Superficial Femoral Vein"),
    "SIGMOID": ("60184004", "Sigmoid colon"),
    "SMA": ("42258001", "Superior mesenteric artery"),
    "SPINALCORD": ("2748008", "Spinal cord"),
    "SPLEEN": ("78961009", "Spleen"),
    "SPLENICA": ("22083002", "Splenic artery"),
    "SPLENICV": ("35819009", "Splenic vein"),
    "STIFLE": ("116010006", "Stiffle"),
    "SUBCLAVIANA": ("36765005", "Subclavian artery"),
    "SUBCLAVIANV": ("9454009", "Subclavian vein"),
    "SUBCOSTAL": ("19695001", "Subcostal"),
    "SUPRACLAVICULAR": ("77621008", "Supraclavicular region of neck"),
    "SUPRAPUBIC": ("11708003", "Hypogastric region"),
    "SUPTHYROIDA": ("72021004", "Superior thyroid artery"),
    "SVC": ("48345005", "Superior vena cava"),
    "TAIL": ("18149002", "Coccygeal vertrebrae"),
    "TARSUS": ("108371006", "Tarsus"),
    "TESTIS": ("40689003", "Testis"),
    "THALAMUS": ("42695009", "Thalamus"),
    "THORACICAORTA": ("113262008", "Thoracic aorta"),
    "THYMUS": ("9875009", "Thymus"),
    "THYROID": ("69748006", "Thyroid"),
    "TIBIA": ("12611008", "Tibia"),
    "TIBIAFIBULA": ("110536004", "Tibia and fibula"),
    "TONGUE": ("21974007", "Tongue"),
    "TRACHEABRONCHUS": ("110726009", "Trachea and bronchus"),
    "TRANSVERSECOLON": ("485005", "Transverse colon"),
    "UGITRACT": ("62834003", "Upper gastro-intestinal tract"),
    "ULNA": ("23416004", "Ulna"),
    "ULNARA": ("44984001", "Ulnar artery"),
    "UMBILICAL": ("90290004", "Umbilical region"),
    "UMBILICALA": ("50536004", "Umbilical artery"),
    "UMBILICALV": ("284639000", "Umbilical vein"),
    "URINARYTRACT": ("431938005", "Urinary tract"),
    "UTERUS": ("35039007", "Uterus"),
    "VAGINA": ("76784001", "Vagina"),
    "VEIN": ("29092000", "Vein"),
    "VERTEBRALA": ("85234005", "Vertebral artery"),
    "VULVA": ("45292006", "Vulva"),
    "WING": ("53036007", "Wing"),
}

BODY_PART_EXAMINED: dict[str, tuple[str, str]] = {**_CID_4031_ROWS, **_OTHER_ROWS}

# The terms whose code is a CID 4031 "Common Anatomic Region" concept.
CID_4031_TERMS: frozenset[str] = frozenset(_CID_4031_ROWS)

# DICOM Laterality (0020,0060) / Image Laterality (0020,0062) -> SNOMED CT (code, display).
# R4 binds series.laterality to the bodysite-laterality value set, which has no "unpaired".
LATERALITY_R4: dict[str, tuple[str, str]] = {
    "L": ("419161000", "Unilateral left"),
    "R": ("419465000", "Unilateral right"),
    "B": ("51440002", "Right and left"),
}

# R5 uses DICOM CID 244. DICOM's "U" means *unpaired* (the body part has no left or right), not
# CID 244's "Unilateral" (one of a pair): there is no laterality to state, so U is left out.
LATERALITY_R5: dict[str, tuple[str, str]] = {
    "L": ("7771000", "Left"),
    "R": ("24028007", "Right"),
    "B": ("51440002", "Bilateral"),
}

_LATERALITY_BY_RELEASE: Final[dict[str, dict[str, tuple[str, str]]]] = {
    "R4": LATERALITY_R4,
    "R5": LATERALITY_R5,
}


def _snomed(entry: tuple[str, str] | None) -> dict[str, str] | None:
    """A SNOMED CT Coding for a (code, display) pair, or None when there is no pair."""
    if entry is None:
        return None
    code, display = entry
    return {"system": SNOMED_SYSTEM, "code": code, "display": display}


def body_site_coding(body_part_examined: str) -> dict[str, str] | None:
    """The SNOMED CT Coding for a Body Part Examined term, or None when the term is not known.

    The term is matched without case, surrounding blanks, or spaces and underscores between its
    words, so " chest " and "Abdomen Pelvis" find CHEST and ABDOMENPELVIS.
    """
    term = re.sub(r"[\s_]+", "", body_part_examined).upper()
    return _snomed(BODY_PART_EXAMINED.get(term))


def laterality_coding(value: str, *, release: str) -> dict[str, str] | None:
    """The SNOMED CT Coding for a DICOM laterality value in FHIR ``release`` ("R4" or "R5").

    ``value`` is L, R or B, in any case and with blanks around it; anything else (U, unpaired,
    included) gives None. An unknown release is a programming error and raises ValueError.
    """
    try:
        table = _LATERALITY_BY_RELEASE[release]
    except KeyError:
        raise ValueError(f"unknown FHIR release {release!r}; expected 'R4' or 'R5'") from None
    return _snomed(table.get(value.strip().upper()))


def _modality_displays() -> dict[str, str]:
    """DCM modality code -> code meaning, for the codes of CID 29 and CID 33 in pydicom."""
    displays: dict[str, str] = {}
    for collection in (codes.cid29, codes.cid33):
        for code in collection.concepts.values():
            if code.scheme_designator == "DCM":
                displays.setdefault(code.value, code.meaning)
    return displays


# Built once at import, from pydicom's bundled tables (no I/O).
_MODALITY_DISPLAYS: Final[dict[str, str]] = _modality_displays()
# CID 29 "Acquisition Modality": what R4's study-level ImagingStudy.modality may list.
_ACQUISITION_MODALITIES: Final[frozenset[str]] = frozenset(
    code.value for code in codes.cid29.concepts.values() if code.scheme_designator == "DCM"
)


def is_acquisition_modality(code: str) -> bool:
    """True for a code of CID 29 "Acquisition Modality" (CT, MR, US, ...), not SR, RTPLAN, OT."""
    return code in _ACQUISITION_MODALITIES


def modality_display(code: str) -> str | None:
    """The DCM code meaning of a DICOM modality code ("CT" -> "Computed Tomography"), or None."""
    return _MODALITY_DISPLAYS.get(code)
