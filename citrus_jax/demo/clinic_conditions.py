"""The condition table of the clinic demo world (data only; the generator is clinic_world.py).

A TEACHING TOY, NOT CLINICAL GUIDANCE. The entries are short summaries written from general
medical knowledge so that a tiny model has a small, realistic world to learn; they are incomplete,
simplified and not reviewed for clinical use. Never use them to diagnose or treat anyone.

How the generator reads the table:
- Findings are short phrases in four categories (history, symptoms, signs, tests). A phrase is
  shared when several conditions list the exact same string; the generator derives, for every
  finding, the list of conditions that show it. The world is closed: a finding a condition does not
  list rules that condition out, with two exceptions:
  - NONSPECIFIC findings (fever, fatigue, most risk factors, ...) support a diagnosis but never
    rule one out;
  - NORMAL_FINDINGS (normal results) rule out only the conditions listing a contradicting abnormal
    result ("normal troponin" rules out a myocardial infarction, not a migraine).
- FEMALE_FINDINGS make the generated patient a woman of reproductive age.
- `lookalikes` maps each look-alike condition (also in the table) to a sentence on how to tell it
  apart from this condition; the generator builds differentials and MCQ distractors from it.
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Condition:
  name: str
  specialty: str
  summary: str  # completes "<name> is ..."
  age: tuple[int, int]  # typical age range, in `age_unit`s
  history: tuple[str, ...]
  symptoms: tuple[str, ...]
  signs: tuple[str, ...]
  tests: tuple[str, ...]
  lookalikes: dict[str, str]
  management: tuple[str, ...]
  sex: str | None = None  # "female"/"male" when the condition is (nearly) exclusive to one sex
  age_unit: str = "year"  # "year", "month" or "week"
  aliases: tuple[str, ...] = ()  # other names, e.g. to detect leaks of held-out conditions


# Conditions that, by default, appear only in the CPT corpus and as gold answers of the test split.
DEFAULT_CPT_ONLY = ("Addison disease", "Lyme disease", "Polymyalgia rheumatica", "Pyloric stenosis")

# Findings too common to rule a condition out when it does not list them (weak evidence only).
NONSPECIFIC = frozenset({
    "fever", "fatigue", "weight loss", "weight gain", "nausea with vomiting", "anorexia", "dyspnea",
    "dyspnea on exertion", "headache", "joint pain", "an itchy rash", "palpitations", "low mood",
    "poor concentration", "constipation", "tachycardia", "tachypnea", "pallor", "hypertension",
    "dry mucous membranes", "elevated white cell count", "raised CRP and ESR",
    "raised serum cholesterol", "current cigarette smoking", "poorly controlled hypertension",
    "type 2 diabetes mellitus", "hypercholesterolemia", "heavy alcohol use", "obesity",
    "a recent viral upper respiratory infection", "symptoms worse with stress",
    "sick contacts with similar symptoms", "previous Epstein-Barr virus infection",
    "a family history of autoimmune disease", "a family history of thyroid disease",
    "a family history of inflammatory bowel disease", "a family history of celiac disease",
    "a family history of migraine", "a family history of psoriasis",
    "a family history of pyloric stenosis",
})

# Findings that only make sense in a female patient (of reproductive age).
FEMALE_FINDINGS = frozenset({
    "heavy menstrual periods", "irregular or absent periods", "a missed menstrual period",
    "light vaginal bleeding", "abnormal vaginal discharge", "pain during intercourse",
    "adnexal tenderness", "cervical motion tenderness", "a tender adnexal mass",
    "a positive urine pregnancy test", "a negative urine pregnancy test",
    "an empty uterus with an adnexal mass on transvaginal ultrasound",
    "an enlarged ovary with reduced Doppler flow on ultrasound", "a known ovarian cyst",
    "polycystic ovaries on pelvic ultrasound", "previous pelvic infection or tubal surgery",
    "oral contraceptive use", "attacks triggered by sleep loss, stress or menstruation",
    "milky nipple discharge", "excess facial and body hair", "hirsutism",
})

# Normal results rule out only the conditions that list a contradicting abnormal finding (None:
# every sign of the table). Elsewhere they are neutral: a normal TSH says nothing about a stone.
_CXR = ("lobar consolidation on chest X-ray", "upper lobe cavitation on chest X-ray",
        "a visceral pleural line with absent lung markings beyond it on chest X-ray",
        "cardiomegaly with pleural effusions on chest X-ray",
        "a widened mediastinum on chest X-ray",
        "hyperinflated lungs with flattened diaphragms on chest X-ray",
        "a mediastinal mass on chest X-ray")
_NEURO_SIGNS = ("facial weakness sparing the forehead on one side",
                "brisk reflexes with an upgoing plantar", "expressive aphasia", "neck stiffness",
                "a reduced level of consciousness", "a positive Kernig sign",
                "a relative afferent pupillary defect", "internuclear ophthalmoplegia",
                "absent tendon reflexes", "symmetrical flaccid weakness of the legs",
                "facial weakness on both sides",
                "facial weakness involving the forehead on one side",
                "inability to close one eye", "loss of vibration and position sense in the feet")
_BLOOD_COUNT = ("microcytic anemia", "macrocytic anemia", "a low platelet count",
                "elevated white cell count")
_CT_HEAD = ("blood in the basal cisterns on non-contrast CT of the head",)
NORMAL_FINDINGS: dict[str, tuple[str, ...] | None] = {
    "an unremarkable physical examination": None,
    "a normal neurological examination": _NEURO_SIGNS,
    "normal troponin": ("elevated troponin", "a mildly elevated troponin"),
    "a normal resting ECG": ("ST elevation on ECG", "reciprocal ST depression on ECG",
                             "PR depression on ECG",
                             "an irregularly irregular rhythm without P waves on ECG"),
    "normal thyroid function tests": ("raised TSH with low free T4",
                                      "suppressed TSH with raised free T4"),
    "normal fecal calprotectin": ("elevated fecal calprotectin",),
    "negative celiac serology": ("positive anti-tissue transglutaminase IgA antibodies",),
    "a normal full blood count": _BLOOD_COUNT,
    "a normal full blood count and CRP": _BLOOD_COUNT + ("raised CRP and ESR",),
    "an otherwise normal full blood count and blood film": (
        "microcytic anemia", "macrocytic anemia", "elevated white cell count",
        "atypical lymphocytes on blood film"),
    "normal CRP and ESR": ("raised CRP and ESR",),
    "normal blood glucose": ("blood glucose above 14 mmol/L", "raised fasting glucose"),
    "a normal platelet count": ("a low platelet count",),
    "a negative urine pregnancy test": ("a positive urine pregnancy test",),
    "a clear chest X-ray": _CXR,
    "a clear chest on auscultation": ("focal crackles with bronchial breathing",
                                      "bibasal inspiratory crackles", "diffuse expiratory wheeze",
                                      "fine inspiratory crackles and wheeze",
                                      "crackles over the upper zones",
                                      "reduced breath sounds on one side"),
    "no hemorrhage on non-contrast CT of the head": _CT_HEAD,
    "a normal CT of the head": _CT_HEAD,
    "no limb weakness": ("sudden weakness of one arm and leg", "ascending symmetrical leg weakness",
                         "symmetrical flaccid weakness of the legs", "proximal muscle weakness"),
    "no lymphadenopathy or splenomegaly": ("splenomegaly", "posterior cervical lymphadenopathy",
                                           "painless rubbery cervical lymphadenopathy",
                                           "tender anterior cervical lymphadenopathy"),
    "normal creatine kinase": (),
    "normal coagulation studies": (),
    "a negative urine drug screen": (),
}

C = Condition
CONDITIONS: tuple[Condition, ...] = (
    # ---------------------------------------- cardiology
    C(name="Acute myocardial infarction", specialty="cardiology", age=(45, 85),
      aliases=("heart attack", "STEMI"),
      summary=("death of heart muscle caused by sudden occlusion of a coronary artery, usually "
               "by thrombus forming on a ruptured atherosclerotic plaque"),
      history=("current cigarette smoking", "poorly controlled hypertension",
               "type 2 diabetes mellitus", "hypercholesterolemia"),
      symptoms=("crushing central chest pain lasting more than 20 minutes",
                "chest pain radiating to the left arm or jaw", "diaphoresis",
                "nausea with vomiting", "dyspnea"),
      signs=("pale clammy skin", "tachycardia"),
      tests=("ST elevation on ECG", "reciprocal ST depression on ECG", "elevated troponin"),
      lookalikes={
          "Stable angina":
              "Angina is brief, provoked by exertion and relieved by rest, with a normal "
              "troponin; infarction causes prolonged pain at rest with a troponin rise.",
          "Acute pericarditis":
              "Pericarditis causes sharp pleuritic pain eased by sitting forward, a friction "
              "rub, and diffuse ST elevation with PR depression rather than regional ST "
              "elevation with reciprocal depression.",
          "Aortic dissection":
              "Dissection gives abrupt tearing pain radiating to the back, unequal arm blood "
              "pressures and a widened mediastinum; antithrombotic treatment for a presumed "
              "infarction can be fatal.",
          "Pulmonary embolism":
              "Embolism presents with sudden dyspnea, pleuritic pain and hypoxemia, often after "
              "immobilisation, and CT pulmonary angiography shows the clot.",
          "Gastroesophageal reflux disease":
              "Reflux pain is burning, related to meals and lying flat and relieved by antacids, "
              "with a normal ECG and troponin.",
      },
      management=("aspirin plus a second antiplatelet agent (ticagrelor or clopidogrel)",
                  "emergency reperfusion by primary percutaneous coronary intervention",
                  "anticoagulation with heparin",
                  "long-term beta-blocker, ACE inhibitor and high-intensity statin")),
    C(name="Stable angina", specialty="cardiology", age=(45, 85),
      aliases=("angina pectoris",),
      summary=("episodic chest pain from myocardial ischemia when a fixed coronary narrowing "
               "cannot meet the demand of exertion"),
      history=("current cigarette smoking", "poorly controlled hypertension",
               "type 2 diabetes mellitus", "hypercholesterolemia"),
      symptoms=("exertional chest tightness relieved by rest within minutes",
                "chest pain radiating to the left arm or jaw", "dyspnea on exertion"),
      signs=("an unremarkable physical examination",),
      tests=("a normal resting ECG", "normal troponin",
             "inducible ischemia on exercise stress testing",
             "coronary artery stenosis on CT coronary angiography"),
      lookalikes={
          "Acute myocardial infarction":
              "Infarction pain lasts more than 20 minutes at rest, often with sweating and "
              "vomiting, and raises the troponin; angina settles with rest.",
          "Gastroesophageal reflux disease":
              "Reflux causes burning pain after meals or on lying flat that responds to "
              "antacids, not pain brought on by exertion.",
          "Panic disorder":
              "Panic attacks come on unpredictably at rest with fear, palpitations and tingling, "
              "and stress testing is normal.",
          "Peptic ulcer disease":
              "Ulcer pain is epigastric and linked to meals or NSAID use rather than to "
              "exertion.",
      },
      management=("sublingual glyceryl trinitrate for attacks",
                  "a beta-blocker or calcium-channel blocker for prevention",
                  "aspirin and a statin for secondary prevention",
                  "revascularisation if symptoms persist despite medication")),
    C(name="Acute pericarditis", specialty="cardiology", age=(16, 60),
      summary="inflammation of the pericardial sac, most often viral or idiopathic",
      history=("a recent viral upper respiratory infection",),
      symptoms=("pleuritic chest pain", "chest pain relieved by sitting forward", "fever"),
      signs=("a pericardial friction rub", "tachycardia"),
      tests=("ST elevation on ECG", "PR depression on ECG",
             "a pericardial effusion on echocardiography", "a mildly elevated troponin",
             "raised CRP and ESR"),
      lookalikes={
          "Acute myocardial infarction":
              "Infarction causes pressure-like pain unaffected by posture or breathing, regional "
              "ST elevation with reciprocal depression, and a marked troponin rise.",
          "Pulmonary embolism":
              "Embolism causes pleuritic pain with sudden dyspnea and hypoxemia, often after "
              "immobilisation, without a friction rub or diffuse ST elevation.",
          "Spontaneous pneumothorax":
              "Pneumothorax causes sudden pleuritic pain with reduced breath sounds and "
              "hyperresonance on one side, and the chest X-ray shows a pleural line.",
          "Community-acquired pneumonia":
              "Pneumonia causes productive cough, focal crackles and consolidation on chest "
              "X-ray rather than a friction rub and posture-dependent pain.",
      },
      management=("an NSAID (ibuprofen) with gastric protection plus colchicine for 3 months",
                  "avoid strenuous exercise until symptoms and CRP settle",
                  "echocardiography to look for a large effusion or tamponade")),
    C(name="Aortic dissection", specialty="cardiology", age=(50, 85),
      summary=("a tear in the aortic intima that lets blood split the media and create a false "
               "lumen; a surgical emergency"),
      history=("poorly controlled hypertension",
               "a connective tissue disorder such as Marfan syndrome"),
      symptoms=("sudden tearing chest pain", "pain radiating to the back", "diaphoresis",
                "syncope"),
      signs=("a blood pressure difference of more than 20 mmHg between the arms",
             "an early diastolic murmur of aortic regurgitation"),
      tests=("a widened mediastinum on chest X-ray", "an intimal flap on CT angiography",
             "normal troponin"),
      lookalikes={
          "Acute myocardial infarction":
              "Infarction pain builds up rather than tearing through to the back, arm pressures "
              "are equal, and the ECG shows ST elevation with a troponin rise.",
          "Pulmonary embolism":
              "Embolism causes pleuritic pain with hypoxemia and a filling defect in the "
              "pulmonary arteries, not tearing back pain and a widened mediastinum.",
          "Acute pericarditis":
              "Pericarditis pain is pleuritic and eased by sitting forward, with a friction rub "
              "and diffuse ST elevation.",
          "Acute pancreatitis":
              "Pancreatitis causes epigastric pain radiating to the back with vomiting and a "
              "lipase above three times normal, usually after alcohol or gallstones.",
      },
      management=("immediate heart rate and blood pressure control with IV labetalol or esmolol",
                  "emergency surgical repair for type A (ascending) dissection",
                  "medical or endovascular management for uncomplicated type B dissection",
                  "no thrombolysis or antiplatelet agents")),
    C(name="Heart failure", specialty="cardiology", age=(55, 90),
      aliases=("congestive heart failure",),
      summary=("a syndrome in which the heart cannot pump enough blood at normal filling "
               "pressures, most often after myocardial infarction or long-standing hypertension"),
      history=("a previous myocardial infarction", "poorly controlled hypertension"),
      symptoms=("dyspnea on exertion", "orthopnea", "paroxysmal nocturnal dyspnea", "fatigue"),
      signs=("raised jugular venous pressure", "bibasal inspiratory crackles",
             "bilateral pitting leg edema", "a third heart sound"),
      tests=("elevated BNP", "hypoxemia on pulse oximetry",
             "cardiomegaly with pleural effusions on chest X-ray",
             "reduced ejection fraction on echocardiography"),
      lookalikes={
          "Chronic obstructive pulmonary disease":
              "COPD causes chronic productive cough and wheeze in a heavy smoker with "
              "irreversible airflow obstruction, without raised JVP or a high BNP.",
          "Community-acquired pneumonia":
              "Pneumonia causes fever, purulent sputum and focal consolidation rather than "
              "orthopnea, bilateral crackles and edema.",
          "Nephrotic syndrome":
              "Nephrotic syndrome causes edema with heavy proteinuria and a low albumin, while "
              "the jugular venous pressure and BNP are normal.",
          "Pulmonary embolism":
              "Embolism is abrupt, with pleuritic pain and hypoxemia despite a clear chest "
              "X-ray, not orthopnea with cardiomegaly.",
      },
      management=("a loop diuretic (furosemide) to relieve congestion",
                  "ACE inhibitor or sacubitril-valsartan, beta-blocker, mineralocorticoid "
                  "antagonist and SGLT2 inhibitor for reduced ejection fraction",
                   "daily weights and advice on salt and fluid intake")),
    C(name="Atrial fibrillation", specialty="cardiology", age=(60, 90),
      summary=("an irregular supraventricular rhythm with chaotic atrial activity and no "
               "organised atrial contraction, a major cause of embolic stroke"),
      history=("poorly controlled hypertension", "heavy alcohol use"),
      symptoms=("palpitations", "dyspnea on exertion", "fatigue", "lightheadedness"),
      signs=("an irregularly irregular pulse", "tachycardia"),
      tests=("an irregularly irregular rhythm without P waves on ECG",
             "normal thyroid function tests"),
      lookalikes={
          "Graves disease":
              "Thyrotoxicosis causes heat intolerance, weight loss, tremor and goitre with a "
              "suppressed TSH; it can itself trigger atrial fibrillation, so thyroid function is "
              "always checked.",
          "Panic disorder":
              "Panic attacks cause a fast but regular sinus rhythm with fear and tingling, and "
              "the ECG is normal.",
          "Heart failure":
              "Heart failure causes orthopnea, raised JVP, crackles and edema with a high BNP, "
              "and the rhythm may be regular.",
          "Generalized anxiety disorder":
              "Anxiety causes persistent worry with a regular pulse and a normal ECG.",
      },
      management=("rate control with a beta-blocker or diltiazem",
                  "anticoagulation with a DOAC according to the CHA2DS2-VASc score",
                  "rhythm control (cardioversion or ablation) in selected patients")),
    # ---------------------------------------- pulmonology
    C(name="Pulmonary embolism", specialty="pulmonology", age=(25, 80),
      aliases=("PE",),
      summary=("obstruction of the pulmonary arteries by thrombus, usually from a deep vein of "
               "the leg"),
      history=("recent immobilisation after surgery or long-haul travel", "oral contraceptive use",
               "active cancer"),
      symptoms=("sudden-onset dyspnea", "pleuritic chest pain", "hemoptysis", "syncope"),
      signs=("tachycardia", "tachypnea", "unilateral calf swelling and tenderness"),
      tests=("hypoxemia on pulse oximetry", "a clear chest X-ray", "elevated D-dimer",
             "a mildly elevated troponin", "a filling defect on CT pulmonary angiography"),
      lookalikes={
          "Community-acquired pneumonia":
              "Pneumonia develops over days with fever, purulent sputum and consolidation on "
              "chest X-ray.",
          "Spontaneous pneumothorax":
              "Pneumothorax gives reduced breath sounds and hyperresonance on one side and a "
              "visible pleural line on chest X-ray.",
          "Acute myocardial infarction":
              "Infarction gives crushing central pain with regional ST elevation and a large "
              "troponin rise, without leg swelling or a thrombosis risk story.",
          "Acute pericarditis":
              "Pericarditis pain eases when sitting forward, with a friction rub and diffuse ST "
              "elevation, and oxygen saturation is normal.",
          "Panic disorder":
              "Panic causes breathlessness with tingling and fear but normal oxygen saturation; "
              "it is diagnosed only after embolism has been excluded.",
      },
      management=("anticoagulation with a DOAC or low-molecular-weight heparin",
                  "systemic thrombolysis if there is hemodynamic instability",
                  "at least 3 months of anticoagulation, longer if unprovoked")),
    C(name="Spontaneous pneumothorax", specialty="pulmonology", age=(16, 40),
      summary=("air in the pleural space from rupture of small apical blebs, typically in tall "
               "thin young smokers"),
      history=("current cigarette smoking", "a tall thin body habitus"),
      symptoms=("sudden-onset dyspnea", "pleuritic chest pain"),
      signs=("reduced breath sounds on one side", "hyperresonance to percussion on one side",
             "tachycardia"),
      tests=("hypoxemia on pulse oximetry",
             "a visceral pleural line with absent lung markings beyond it on chest X-ray"),
      lookalikes={
          "Pulmonary embolism":
              "Embolism causes hypoxemia with normal breath sounds and a clear chest X-ray, "
              "often with risk factors for thrombosis.",
          "Acute pericarditis":
              "Pericarditis has a friction rub, eases when sitting forward and shows diffuse ST "
              "elevation; breath sounds are normal.",
          "Asthma":
              "Asthma gives diffuse wheeze on both sides with reversible airflow obstruction, "
              "not a silent hyperresonant hemithorax.",
          "Community-acquired pneumonia":
              "Pneumonia causes fever, productive cough and dullness with bronchial breathing, "
              "not hyperresonance.",
      },
      management=("observation with oxygen if small and the patient is not breathless",
                  "needle aspiration, then a chest drain if it fails, if large or symptomatic",
                  "smoking cessation and no flying until resolved")),
    C(name="Community-acquired pneumonia", specialty="pulmonology", age=(20, 85),
      aliases=("pneumonia",),
      summary=("acute infection of the lung parenchyma acquired outside hospital, most often "
               "caused by Streptococcus pneumoniae"),
      history=("current cigarette smoking",),
      symptoms=("fever", "rigors", "productive cough", "rusty or purulent sputum",
                "pleuritic chest pain", "myalgia", "dyspnea"),
      signs=("tachypnea", "focal crackles with bronchial breathing",
             "dullness to percussion over the affected lobe", "reduced breath sounds on one side"),
      tests=("lobar consolidation on chest X-ray", "hypoxemia on pulse oximetry",
             "elevated white cell count", "raised CRP and ESR"),
      lookalikes={
          "Pulmonary embolism":
              "Embolism is sudden, with hypoxemia and a clear chest X-ray and no purulent "
              "sputum.",
          "Heart failure":
              "Heart failure causes bilateral crackles, orthopnea, raised JVP and edema with "
              "cardiomegaly, usually without fever.",
          "Pulmonary tuberculosis":
              "Tuberculosis runs a chronic course over weeks with night sweats, weight loss and "
              "upper lobe cavitation.",
          "Influenza":
              "Influenza causes abrupt fever with myalgia and a dry cough, but the chest X-ray "
              "is clear.",
          "Chronic obstructive pulmonary disease":
              "A COPD exacerbation causes wheeze and more sputum in a known smoker with "
              "hyperinflated lungs but no new consolidation.",
      },
      management=("oral amoxicillin for mild disease (doxycycline or clarithromycin if allergic)",
                  "severity assessment with the CURB-65 score",
                  "IV co-amoxiclav plus clarithromycin for severe disease",
                  "oxygen and fluids as needed")),
    C(name="Asthma", specialty="pulmonology", age=(5, 45),
      summary=("chronic inflammatory airway disease with variable, reversible airflow "
               "obstruction and bronchial hyperresponsiveness"),
      history=("a personal or family history of atopy",
               "symptoms triggered by exercise, cold air or allergens"),
      symptoms=("episodic wheezing", "chest tightness", "nocturnal cough", "dyspnea"),
      signs=("diffuse expiratory wheeze", "prolonged expiratory phase"),
      tests=("FEV1 improving by more than 12% after bronchodilator on spirometry",
             "diurnal variability in peak expiratory flow",
             "raised fractional exhaled nitric oxide"),
      lookalikes={
          "Chronic obstructive pulmonary disease":
              "COPD starts after 40 in heavy smokers, with persistent rather than episodic "
              "symptoms and airflow obstruction that does not reverse.",
          "Heart failure":
              "Heart failure causes orthopnea, raised JVP, bibasal crackles and edema with a "
              "high BNP.",
          "Gastroesophageal reflux disease":
              "Reflux can cause a chronic cough but with heartburn and regurgitation and normal "
              "spirometry.",
          "Bronchiolitis":
              "Bronchiolitis is a first viral episode in an infant under one year, with crackles "
              "as well as wheeze, and does not respond to bronchodilators.",
      },
      management=("an inhaled short-acting beta-agonist (salbutamol) for relief",
                  "a regular inhaled corticosteroid, or ICS-formoterol as needed and as "
                  "maintenance",
                   "oral prednisolone for exacerbations",
                  "a written asthma action plan and an inhaler technique check")),
    C(name="Chronic obstructive pulmonary disease", specialty="pulmonology", age=(45, 85),
      aliases=("COPD", "emphysema", "chronic bronchitis"),
      summary=("persistent, progressive airflow limitation from chronic bronchitis and "
               "emphysema, almost always caused by smoking"),
      history=("current cigarette smoking", "a smoking history of more than 30 pack-years"),
      symptoms=("productive cough", "a cough on most days for several years",
                "dyspnea on exertion", "frequent winter chest infections"),
      signs=("barrel-shaped chest", "diffuse expiratory wheeze", "prolonged expiratory phase",
             "pursed-lip breathing"),
      tests=("post-bronchodilator FEV1/FVC below 0.70 on spirometry",
             "hypoxemia on pulse oximetry",
             "hyperinflated lungs with flattened diaphragms on chest X-ray"),
      lookalikes={
          "Asthma":
              "Asthma begins earlier with episodic symptoms and atopy, and the airflow "
              "obstruction reverses with bronchodilator.",
          "Heart failure":
              "Heart failure causes orthopnea and edema with raised JVP, cardiomegaly and a high "
              "BNP.",
          "Pulmonary tuberculosis":
              "Tuberculosis causes weight loss, night sweats and hemoptysis with upper lobe "
              "cavitation and acid-fast bacilli in sputum.",
          "Community-acquired pneumonia":
              "Pneumonia is an acute illness with fever and new consolidation on chest X-ray.",
      },
      management=("smoking cessation", "inhaled long-acting bronchodilators (LAMA and/or LABA)",
                  "pulmonary rehabilitation", "influenza and pneumococcal vaccination")),
    C(name="Pulmonary tuberculosis", specialty="pulmonology", age=(18, 70),
      aliases=("tuberculosis", "TB"),
      summary=("chronic infection of the lungs by Mycobacterium tuberculosis, spread by airborne "
               "droplets"),
      history=("migration from a country with a high tuberculosis prevalence",
               "HIV infection or other immunosuppression",
               "close contact with a person with active tuberculosis"),
      symptoms=("productive cough", "cough for more than three weeks", "hemoptysis",
                "night sweats", "weight loss", "fever"),
      signs=("crackles over the upper zones",),
      tests=("upper lobe cavitation on chest X-ray", "acid-fast bacilli on sputum smear",
             "a positive interferon-gamma release assay"),
      lookalikes={
          "Community-acquired pneumonia":
              "Bacterial pneumonia is acute, with lobar consolidation rather than cavitation, "
              "and responds quickly to standard antibiotics.",
          "Chronic obstructive pulmonary disease":
              "COPD causes chronic cough and breathlessness in a heavy smoker without fever, "
              "night sweats or cavitation.",
          "Hodgkin lymphoma":
              "Hodgkin lymphoma causes night sweats and weight loss with painless rubbery lymph "
              "nodes and a mediastinal mass rather than cavitating lung disease.",
      },
      management=("rifampicin, isoniazid, pyrazinamide and ethambutol for 2 months, then "
                  "rifampicin and isoniazid for 4 months",
                   "pyridoxine with isoniazid",
                  "airborne isolation, contact tracing and notification")),
    # ---------------------------------------- gastroenterology
    C(name="Gastroesophageal reflux disease", specialty="gastroenterology", age=(25, 70),
      aliases=("GERD", "GORD", "acid reflux"),
      summary=("reflux of acidic gastric contents into the esophagus causing symptoms or mucosal "
               "damage"),
      history=("obesity", "symptoms worse after large meals or on lying flat"),
      symptoms=("burning retrosternal heartburn", "acid regurgitation", "burning epigastric pain",
                "nocturnal cough"),
      signs=("an unremarkable physical examination",),
      tests=("a normal resting ECG", "normal troponin",
             "symptom relief with a trial of proton pump inhibitor",
             "erosive esophagitis on endoscopy"),
      lookalikes={
          "Stable angina":
              "Angina is brought on by exertion and relieved by rest, with inducible ischemia on "
              "stress testing.",
          "Peptic ulcer disease":
              "Ulcer pain is epigastric and linked to meals or NSAIDs, may cause melena, and "
              "endoscopy shows an ulcer.",
          "Acute myocardial infarction":
              "Infarction causes prolonged crushing pain with sweating, ST elevation and a "
              "raised troponin.",
          "Asthma":
              "Asthma causes episodic wheeze and breathlessness with reversible obstruction on "
              "spirometry.",
      },
      management=("weight loss, smaller meals, no late meals and raising the head of the bed",
                  "a proton pump inhibitor for 4-8 weeks",
                  "endoscopy for alarm features such as dysphagia or weight loss")),
    C(name="Peptic ulcer disease", specialty="gastroenterology", age=(30, 75),
      aliases=("peptic ulcer", "duodenal ulcer", "gastric ulcer"),
      summary=("a breach in the gastric or duodenal mucosa, caused mainly by Helicobacter pylori "
               "infection or NSAID use"),
      history=("regular NSAID use", "current cigarette smoking"),
      symptoms=("burning epigastric pain", "pain related to meals", "black tarry stools (melena)"),
      signs=("epigastric tenderness", "pallor"),
      tests=("a positive Helicobacter pylori urea breath test", "an ulcer on upper endoscopy",
             "microcytic anemia"),
      lookalikes={
          "Gastroesophageal reflux disease":
              "Reflux causes retrosternal heartburn and regurgitation, worse lying flat, without "
              "melena.",
          "Acute pancreatitis":
              "Pancreatitis gives severe constant pain radiating to the back with vomiting and a "
              "lipase over three times normal.",
          "Acute cholecystitis":
              "Cholecystitis causes right upper quadrant pain with fever, a positive Murphy sign "
              "and a thick-walled gallbladder on ultrasound.",
          "Acute myocardial infarction":
              "Inferior infarction can mimic epigastric pain but shows ST changes and a troponin "
              "rise, so an ECG is always needed.",
      },
      management=("a proton pump inhibitor",
                  "Helicobacter pylori eradication with a PPI and two antibiotics (e.g. "
                  "amoxicillin and clarithromycin)",
                   "stop NSAIDs", "urgent endoscopy for bleeding")),
    C(name="Acute appendicitis", specialty="gastroenterology", age=(8, 35),
      aliases=("appendicitis",),
      summary=("acute inflammation of the appendix, usually from luminal obstruction; the "
               "commonest surgical emergency"),
      history=(),
      symptoms=("periumbilical pain migrating to the right lower quadrant",
                "unilateral lower abdominal pain", "anorexia", "nausea with vomiting", "fever"),
      signs=("tenderness at McBurney point", "right lower quadrant tenderness",
             "guarding with rebound tenderness", "a positive Rovsing sign"),
      tests=("elevated white cell count", "a dilated non-compressible appendix on ultrasound",
             "a negative urine pregnancy test"),
      lookalikes={
          "Ectopic pregnancy":
              "Ectopic pregnancy follows a missed period, with vaginal bleeding, a positive "
              "pregnancy test and an empty uterus on ultrasound.",
          "Ovarian torsion":
              "Ovarian torsion starts suddenly with severe one-sided pain and vomiting, and "
              "ultrasound shows an enlarged ovary with reduced Doppler flow.",
          "Pelvic inflammatory disease":
              "PID causes bilateral lower abdominal pain with vaginal discharge and cervical "
              "motion tenderness.",
          "Crohn disease":
              "Crohn disease causes weeks to months of diarrhea, weight loss and right lower "
              "quadrant pain, not a short migrating pain.",
          "Nephrolithiasis":
              "Renal colic causes colicky loin-to-groin pain with hematuria in a restless "
              "patient, without peritonism.",
      },
      management=("laparoscopic appendicectomy", "IV antibiotics before surgery",
                  "IV fluids and analgesia")),
    C(name="Acute cholecystitis", specialty="gastroenterology", age=(35, 75),
      aliases=("cholecystitis",),
      summary=("inflammation of the gallbladder, usually from a gallstone impacted in the cystic "
               "duct"),
      history=("known gallstones", "obesity"),
      symptoms=("constant right upper quadrant pain radiating to the right shoulder",
                "pain radiating to the back", "pain related to meals", "fever",
                "nausea with vomiting"),
      signs=("a positive Murphy sign", "right upper quadrant tenderness"),
      tests=("gallbladder wall thickening with pericholecystic fluid on ultrasound",
             "elevated white cell count", "raised CRP and ESR"),
      lookalikes={
          "Acute pancreatitis":
              "Pancreatitis causes epigastric pain radiating to the back with a lipase above "
              "three times normal; gallstones can cause both.",
          "Peptic ulcer disease":
              "An ulcer causes burning epigastric pain related to meals, without fever or a "
              "Murphy sign.",
          "Acute pyelonephritis":
              "Right pyelonephritis causes flank pain with dysuria, costovertebral angle "
              "tenderness and an abnormal urine dipstick.",
          "Acute myocardial infarction":
              "Inferior infarction can present with upper abdominal pain and vomiting, but the "
              "ECG and troponin are abnormal.",
      },
      management=("IV fluids, analgesia and IV antibiotics",
                  "early laparoscopic cholecystectomy, ideally within a week",
                  "percutaneous cholecystostomy if too unwell for surgery")),
    C(name="Acute pancreatitis", specialty="gastroenterology", age=(30, 75),
      aliases=("pancreatitis",),
      summary="acute inflammation of the pancreas, most often caused by gallstones or alcohol",
      history=("heavy alcohol use", "known gallstones"),
      symptoms=("severe constant epigastric pain", "pain radiating to the back",
                "nausea with vomiting", "fever"),
      signs=("epigastric tenderness", "tachycardia", "flank bruising (Grey Turner sign)"),
      tests=("serum lipase more than three times the upper limit of normal",
             "peripancreatic inflammation on CT", "hypocalcemia"),
      lookalikes={
          "Peptic ulcer disease":
              "A perforated ulcer causes sudden peritonitis with free air under the diaphragm; "
              "an uncomplicated ulcer does not raise the lipase this much.",
          "Acute cholecystitis":
              "Cholecystitis pain sits in the right upper quadrant with a positive Murphy sign "
              "and a normal or mildly raised lipase.",
          "Aortic dissection":
              "Dissection causes tearing pain with unequal arm pressures and a widened "
              "mediastinum.",
          "Acute myocardial infarction":
              "Infarction causes chest pain with ST elevation and a troponin rise.",
          "Diabetic ketoacidosis":
              "DKA can cause abdominal pain and a mildly raised lipase, but with hyperglycemia, "
              "ketosis and acidosis.",
      },
      management=("early generous IV fluids", "analgesia and early oral feeding as tolerated",
                  "treat the cause: ERCP for gallstone cholangitis, cholecystectomy for "
                  "gallstone pancreatitis",
                   "alcohol cessation")),
    C(name="Crohn disease", specialty="gastroenterology", age=(15, 40),
      aliases=("Crohn's disease",),
      summary=("chronic transmural granulomatous inflammation that can affect any part of the "
               "gut, classically the terminal ileum"),
      history=("current cigarette smoking", "a family history of inflammatory bowel disease"),
      symptoms=("chronic non-bloody diarrhea", "crampy abdominal pain", "weight loss", "fatigue",
                "mouth ulcers", "fever"),
      signs=("perianal fistula or skin tags", "a tender right lower quadrant mass",
             "right lower quadrant tenderness", "erythema nodosum on the shins"),
      tests=("elevated fecal calprotectin", "microcytic anemia",
             "skip lesions with granulomas on ileocolonoscopy",
             "terminal ileal thickening on MR enterography"),
      lookalikes={
          "Ulcerative colitis":
              "Ulcerative colitis causes bloody diarrhea with continuous inflammation from the "
              "rectum, without skip lesions, fistulae or granulomas; smoking is protective.",
          "Celiac disease":
              "Celiac disease causes diarrhea and bloating with positive tTG antibodies and "
              "villous atrophy, without fistulae or a raised calprotectin.",
          "Irritable bowel syndrome":
              "IBS causes pain relieved by defecation with a normal calprotectin, no weight loss "
              "and no nocturnal symptoms.",
          "Acute appendicitis":
              "Appendicitis is a short illness of a day or two with migrating pain and fever, "
              "not weeks of diarrhea.",
      },
      management=("oral corticosteroids (budesonide for ileal disease) to induce remission",
                  "azathioprine or anti-TNF therapy (infliximab, adalimumab) to maintain "
                  "remission",
                   "smoking cessation", "surgery for strictures or fistulae")),
    C(name="Ulcerative colitis", specialty="gastroenterology", age=(15, 45),
      summary=("chronic relapsing mucosal inflammation of the colon extending continuously from "
               "the rectum"),
      history=("recent smoking cessation", "a family history of inflammatory bowel disease"),
      symptoms=("bloody diarrhea with mucus", "fecal urgency", "tenesmus", "crampy abdominal pain",
                "fatigue"),
      signs=("erythema nodosum on the shins", "pallor"),
      tests=("elevated fecal calprotectin",
             "continuous mucosal inflammation from the rectum on colonoscopy",
             "microcytic anemia"),
      lookalikes={
          "Crohn disease":
              "Crohn disease can affect any part of the gut with skip lesions, perianal fistulae "
              "and granulomas, often with non-bloody diarrhea and right lower quadrant pain.",
          "Viral gastroenteritis":
              "Infectious diarrhea is acute and settles within days, often with sick contacts, "
              "and stool tests identify the pathogen.",
          "Irritable bowel syndrome":
              "IBS does not cause rectal bleeding, anemia or a raised calprotectin.",
          "Diverticulitis":
              "Diverticulitis affects older adults with left lower quadrant pain and fever, and "
              "CT shows pericolic inflammation.",
      },
      management=("oral and rectal mesalazine (5-ASA) for mild to moderate disease",
                  "oral or IV corticosteroids for flares",
                  "thiopurines or biologics for steroid-dependent disease",
                  "colectomy for refractory disease")),
    C(name="Celiac disease", specialty="gastroenterology", age=(10, 60),
      aliases=("coeliac disease", "gluten-sensitive enteropathy"),
      summary=("an immune-mediated enteropathy of the small bowel triggered by dietary gluten in "
               "genetically susceptible people"),
      history=("type 1 diabetes or autoimmune thyroid disease",
               "a family history of celiac disease"),
      symptoms=("chronic non-bloody diarrhea", "bloating", "weight loss", "fatigue"),
      signs=("an itchy blistering rash on the elbows (dermatitis herpetiformis)", "pallor"),
      tests=("positive anti-tissue transglutaminase IgA antibodies",
             "villous atrophy on duodenal biopsy", "microcytic anemia", "low serum ferritin"),
      lookalikes={
          "Irritable bowel syndrome":
              "IBS causes pain relieved by defecation with normal blood tests and negative "
              "celiac serology.",
          "Crohn disease":
              "Crohn disease has a raised calprotectin, mouth ulcers, perianal disease and ileal "
              "inflammation on imaging.",
          "Iron deficiency anemia":
              "Iron deficiency from blood loss causes no diarrhea and celiac serology is "
              "negative, although celiac disease is itself a hidden cause of it.",
          "Graves disease":
              "Thyrotoxicosis causes weight loss and loose stools with heat intolerance, tremor "
              "and a suppressed TSH.",
      },
      management=("a lifelong strict gluten-free diet with dietitian support",
                  "correct iron, folate, vitamin D and calcium deficiency",
                  "repeat serology to check adherence")),
    C(name="Irritable bowel syndrome", specialty="gastroenterology", age=(18, 45),
      aliases=("IBS",),
      summary=("a disorder of gut-brain interaction with recurrent abdominal pain and altered "
               "bowel habit without structural disease"),
      history=("symptoms worse with stress",),
      symptoms=("recurrent abdominal pain relieved by defecation",
                "alternating diarrhea and constipation", "chronic non-bloody diarrhea",
                "crampy abdominal pain", "bloating"),
      signs=("an unremarkable physical examination",),
      tests=("normal fecal calprotectin", "negative celiac serology",
             "a normal full blood count and CRP"),
      lookalikes={
          "Crohn disease":
              "Crohn disease causes weight loss, nocturnal diarrhea, anemia and a raised "
              "calprotectin.",
          "Celiac disease":
              "Celiac disease has positive tTG antibodies and may cause iron deficiency and "
              "weight loss.",
          "Ulcerative colitis":
              "Ulcerative colitis causes bloody diarrhea with a raised calprotectin and visible "
              "colitis.",
      },
      management=("explanation and reassurance, regular meals, soluble fibre and a trial of a "
                  "low-FODMAP diet",
                  "antispasmodics for pain, loperamide for diarrhea or laxatives for constipation",
                  "a low-dose tricyclic antidepressant or CBT for persistent symptoms")),
    C(name="Diverticulitis", specialty="gastroenterology", age=(50, 85),
      summary="inflammation of colonic diverticula, usually in the sigmoid colon",
      history=("a low-fibre diet", "known diverticulosis"),
      symptoms=("left lower quadrant pain", "fever", "constipation"),
      signs=("left lower quadrant tenderness", "guarding with rebound tenderness"),
      tests=("elevated white cell count", "raised CRP and ESR",
             "sigmoid wall thickening with pericolic fat stranding on CT"),
      lookalikes={
          "Ulcerative colitis":
              "Ulcerative colitis causes bloody diarrhea with mucus in younger patients and "
              "continuous colitis from the rectum.",
          "Irritable bowel syndrome":
              "IBS causes recurrent pain relieved by defecation without fever or raised "
              "inflammatory markers.",
          "Nephrolithiasis":
              "Renal colic causes colicky loin-to-groin pain with hematuria rather than fixed "
              "left lower quadrant tenderness with fever.",
          "Acute appendicitis":
              "Appendicitis affects younger patients with periumbilical pain that migrates to "
              "the right lower quadrant.",
      },
      management=("oral antibiotics (e.g. co-amoxiclav) or observation for uncomplicated disease",
                  "IV antibiotics and percutaneous drainage for an abscess",
                  "colonoscopy after recovery to exclude cancer")),
    C(name="Viral gastroenteritis", specialty="gastroenterology", age=(1, 70),
      aliases=("gastroenteritis", "stomach flu"),
      summary=("acute infection of the gut, most often by norovirus in adults and rotavirus in "
               "young children"),
      history=("sick contacts with similar symptoms",),
      symptoms=("acute watery diarrhea", "nausea with vomiting", "crampy abdominal pain",
                "fecal urgency", "fever"),
      signs=("dry mucous membranes", "diffuse mild abdominal tenderness"),
      tests=("norovirus or rotavirus on stool PCR",),
      lookalikes={
          "Acute appendicitis":
              "Appendicitis causes pain that localises to the right lower quadrant, little "
              "diarrhea and a raised white cell count.",
          "Ulcerative colitis":
              "Ulcerative colitis causes weeks of bloody diarrhea with mucus and a raised "
              "calprotectin.",
          "Diabetic ketoacidosis":
              "DKA can cause vomiting and abdominal pain but comes with polyuria, polydipsia, "
              "Kussmaul breathing and ketoacidosis.",
          "Intussusception":
              "Intussusception causes bouts of severe colic with drawing up of the legs and "
              "redcurrant jelly stools in an infant.",
          "Pyloric stenosis":
              "Pyloric stenosis causes projectile non-bilious vomiting without diarrhea in a "
              "hungry infant of 2-8 weeks.",
      },
      management=("oral rehydration solution", "continue normal feeding",
                  "no antibiotics or antidiarrheals in children; IV fluids if severely "
                  "dehydrated")),
    # ---------------------------------------- neurology
    C(name="Ischemic stroke", specialty="neurology", age=(55, 90),
      aliases=("cerebral infarction",),
      summary=("sudden focal loss of brain function from occlusion of a cerebral artery by "
               "thrombus or embolus"),
      history=("poorly controlled hypertension", "known atrial fibrillation"),
      symptoms=("sudden weakness of one arm and leg", "slurred speech", "sudden facial droop",
                "numbness of one limb or one side of the body"),
      signs=("facial weakness sparing the forehead on one side",
             "brisk reflexes with an upgoing plantar", "expressive aphasia"),
      tests=("normal blood glucose", "no hemorrhage on non-contrast CT of the head",
             "restricted diffusion on MRI of the brain"),
      lookalikes={
          "Subarachnoid hemorrhage":
              "Hemorrhage causes a sudden severe headache with neck stiffness and blood on CT; "
              "focal weakness is less prominent.",
          "Migraine":
              "A migraine aura spreads gradually over minutes, is usually visual with positive "
              "symptoms, and is followed by headache in a younger patient.",
          "Bell palsy":
              "Bell palsy causes lower motor neuron facial weakness that includes the forehead, "
              "without limb weakness or speech disturbance.",
          "Multiple sclerosis":
              "Multiple sclerosis causes subacute relapses in young adults with optic neuritis "
              "or sensory symptoms and white matter lesions on MRI.",
      },
      management=("IV thrombolysis (alteplase or tenecteplase) within 4.5 hours of onset",
                  "mechanical thrombectomy for large-vessel occlusion",
                  "aspirin once hemorrhage is excluded, then antiplatelet, statin and blood "
                  "pressure control")),
    C(name="Subarachnoid hemorrhage", specialty="neurology", age=(35, 65),
      aliases=("subarachnoid haemorrhage",),
      summary="bleeding into the subarachnoid space, usually from a ruptured berry aneurysm",
      history=("polycystic kidney disease or a family history of aneurysm",
               "current cigarette smoking", "poorly controlled hypertension"),
      symptoms=("sudden thunderclap headache reaching maximum within a minute",
                "nausea with vomiting", "syncope", "photophobia"),
      signs=("neck stiffness", "a reduced level of consciousness"),
      tests=("blood in the basal cisterns on non-contrast CT of the head",
             "xanthochromia in the cerebrospinal fluid", "an aneurysm on CT angiography"),
      lookalikes={
          "Migraine":
              "Migraine builds over minutes to hours, is often one-sided with aura and recurs in "
              "a familiar pattern.",
          "Bacterial meningitis":
              "Meningitis develops over hours with fever, sometimes a petechial rash, and a "
              "purulent CSF.",
          "Ischemic stroke":
              "Ischemic stroke causes focal weakness or speech disturbance, usually without "
              "severe headache, and the CT shows no blood.",
          "Tension-type headache":
              "Tension-type headache is band-like and gradual, without vomiting, neck stiffness "
              "or photophobia.",
      },
      management=("urgent neurosurgical referral to secure the aneurysm by coiling or clipping",
                  "oral nimodipine for 21 days to prevent vasospasm",
                  "blood pressure control and monitoring for hydrocephalus")),
    C(name="Migraine", specialty="neurology", age=(15, 50),
      summary=("a primary headache disorder with recurrent attacks of moderate to severe "
               "headache and sensory sensitivity"),
      history=("a family history of migraine",
               "attacks triggered by sleep loss, stress or menstruation"),
      symptoms=("recurrent headaches for years", "unilateral throbbing headache", "photophobia",
                "nausea with vomiting", "transient visual disturbance",
                "zigzag lines spreading across the vision before the headache"),
      signs=("a normal neurological examination",),
      tests=("a normal CT of the head",),
      lookalikes={
          "Tension-type headache":
              "Tension-type headache is bilateral and pressing, not worsened by activity, "
              "without nausea or aura.",
          "Subarachnoid hemorrhage":
              "Subarachnoid hemorrhage is a sudden thunderclap headache with neck stiffness and "
              "blood on CT, unlike a familiar recurrent attack.",
          "Ischemic stroke":
              "Stroke deficits are sudden and negative (loss of power or vision) and are not "
              "followed by a typical headache.",
          "Bacterial meningitis":
              "Meningitis causes fever, neck stiffness and confusion with an abnormal CSF.",
          "Giant cell arteritis":
              "Giant cell arteritis causes a new headache after 50 with scalp tenderness, jaw "
              "claudication and a raised ESR.",
      },
      management=("an NSAID or aspirin plus a triptan at the onset of an attack, with an "
                  "antiemetic",
                   "preventive propranolol, topiramate or amitriptyline for frequent attacks",
                  "avoid medication overuse and identify triggers")),
    C(name="Tension-type headache", specialty="neurology", age=(18, 60),
      aliases=("tension headache",),
      summary=("the commonest primary headache: a bilateral, pressing, mild to moderate headache "
               "without migraine features"),
      history=("symptoms worse with stress",),
      symptoms=("recurrent headaches for years", "bilateral band-like pressing headache",
                "headache building through the day", "scalp tenderness"),
      signs=("pericranial muscle tenderness", "a normal neurological examination"),
      tests=("a normal CT of the head",),
      lookalikes={
          "Migraine":
              "Migraine is unilateral and throbbing, worse with activity, with nausea, "
              "photophobia or aura.",
          "Giant cell arteritis":
              "Giant cell arteritis gives a new temporal headache after 50 with jaw "
              "claudication, scalp tenderness and a very high ESR.",
          "Subarachnoid hemorrhage":
              "Subarachnoid hemorrhage starts abruptly at maximum intensity with vomiting and "
              "neck stiffness.",
      },
      management=("simple analgesia (paracetamol or an NSAID), limited to avoid "
                  "medication-overuse headache",
                   "stress management, sleep and exercise",
                  "amitriptyline prophylaxis for chronic tension-type headache")),
    C(name="Bacterial meningitis", specialty="neurology", age=(1, 70),
      aliases=("meningitis",),
      summary=("bacterial infection of the meninges, most often by Streptococcus pneumoniae or "
               "Neisseria meningitidis; a medical emergency"),
      history=("a recent ear or sinus infection",),
      symptoms=("fever", "severe generalized headache", "photophobia", "confusion",
                "nausea with vomiting"),
      signs=("neck stiffness", "a positive Kernig sign", "a non-blanching petechial rash",
             "a reduced level of consciousness", "a toxic appearance"),
      tests=("cloudy CSF with many neutrophils, low glucose and high protein",
             "gram-negative diplococci on CSF gram stain", "elevated white cell count"),
      lookalikes={
          "Subarachnoid hemorrhage":
              "Subarachnoid hemorrhage starts with a sudden thunderclap headache, usually "
              "without fever, and blood shows on CT.",
          "Migraine":
              "Migraine recurs in a familiar pattern without fever, neck stiffness or confusion.",
          "Influenza":
              "Influenza causes fever, headache and myalgia but no neck stiffness or confusion, "
              "and the CSF is normal.",
          "Immune thrombocytopenia":
              "ITP causes petechiae in a well child with an isolated low platelet count and no "
              "fever or meningism.",
      },
      management=("immediate IV ceftriaxone (add amoxicillin if Listeria is possible)",
                  "IV dexamethasone with or before the first antibiotic dose",
                  "antibiotic prophylaxis for close contacts and notification")),
    C(name="Multiple sclerosis", specialty="neurology", age=(20, 45),
      aliases=("MS",),
      summary=("chronic immune-mediated demyelination of the central nervous system with lesions "
               "disseminated in time and space"),
      history=("a previous episode of neurological symptoms that resolved",),
      symptoms=("painful blurred vision in one eye",
                "numbness of one limb or one side of the body", "unsteady gait", "fatigue",
                "symptoms worse with heat"),
      signs=("a relative afferent pupillary defect", "brisk reflexes with an upgoing plantar",
             "internuclear ophthalmoplegia"),
      tests=("periventricular white matter lesions on MRI", "oligoclonal bands in the CSF"),
      lookalikes={
          "Ischemic stroke":
              "Stroke is sudden and maximal at onset in an older patient with vascular risk "
              "factors, affecting a single arterial territory.",
          "Guillain-Barre syndrome":
              "Guillain-Barre syndrome causes ascending flaccid weakness with absent reflexes "
              "after an infection, and the CSF has raised protein with normal cells.",
          "Vitamin B12 deficiency anemia":
              "B12 deficiency causes symmetrical sensory loss in the feet with macrocytic anemia "
              "and a low B12 level.",
          "Migraine":
              "A migraine aura is brief and positive and is followed by headache, with a normal "
              "MRI.",
      },
      management=("high-dose methylprednisolone for disabling relapses",
                  "disease-modifying therapy (e.g. interferon beta, ocrelizumab)",
                  "treatment of spasticity, fatigue and bladder symptoms")),
    C(name="Guillain-Barre syndrome", specialty="neurology", age=(20, 80),
      aliases=("Guillain-Barre", "acute inflammatory demyelinating polyneuropathy"),
      summary="an acute immune-mediated polyneuropathy that typically follows an infection",
      history=("a diarrheal illness two to three weeks earlier",
               "a recent viral upper respiratory infection"),
      symptoms=("ascending symmetrical leg weakness",
                "tingling and numbness in the hands and feet", "unsteady gait", "back pain"),
      signs=("absent tendon reflexes", "symmetrical flaccid weakness of the legs",
             "facial weakness on both sides"),
      tests=("raised CSF protein with a normal cell count",
             "slowed conduction on nerve conduction studies", "a falling forced vital capacity"),
      lookalikes={
          "Multiple sclerosis":
              "Multiple sclerosis causes upper motor neuron signs with brisk reflexes or optic "
              "neuritis, and white matter lesions on MRI.",
          "Ischemic stroke":
              "Stroke causes sudden one-sided weakness with brisk reflexes, not ascending "
              "symmetrical weakness.",
          "Vitamin B12 deficiency anemia":
              "B12 deficiency progresses over months with sensory ataxia and macrocytic anemia.",
      },
      management=("IV immunoglobulin or plasma exchange",
                  "monitor forced vital capacity and admit to intensive care if it falls",
                  "DVT prophylaxis, analgesia and physiotherapy")),
    C(name="Bell palsy", specialty="neurology", age=(15, 70),
      aliases=("Bell's palsy",),
      summary="an acute idiopathic lower motor neuron palsy of the facial nerve",
      history=("a recent viral upper respiratory infection",),
      symptoms=("sudden facial droop", "pain behind the ear", "altered taste",
                "sensitivity to loud sounds"),
      signs=("facial weakness involving the forehead on one side", "inability to close one eye",
             "no limb weakness"),
      tests=(),
      lookalikes={
          "Ischemic stroke":
              "Stroke spares the forehead because of its bilateral cortical supply and often "
              "involves the arm or speech.",
          "Lyme disease":
              "Lyme disease follows a tick bite with erythema migrans and may cause facial palsy "
              "on both sides; serology is positive.",
          "Multiple sclerosis":
              "Multiple sclerosis causes other neurological signs such as optic neuritis or limb "
              "sensory symptoms, with white matter lesions on MRI.",
          "Guillain-Barre syndrome":
              "Guillain-Barre syndrome causes facial weakness on both sides with ascending limb "
              "weakness and absent reflexes.",
      },
      management=("oral prednisolone within 72 hours of onset",
                  "eye protection with lubricating drops and taping the eye shut at night",
                  "review if there is no recovery within 3 weeks")),
    # ---------------------------------------- endocrinology
    C(name="Diabetic ketoacidosis", specialty="endocrinology", age=(10, 35),
      aliases=("DKA",),
      summary=("an acute complication of type 1 diabetes in which insulin deficiency causes "
               "hyperglycemia, ketosis and metabolic acidosis"),
      history=("type 1 diabetes with missed insulin doses",),
      symptoms=("polyuria and polydipsia", "nausea with vomiting", "diffuse abdominal pain",
                "weight loss"),
      signs=("deep rapid (Kussmaul) breathing", "a fruity smell of ketones on the breath",
             "dry mucous membranes", "tachycardia"),
      tests=("blood glucose above 14 mmol/L", "raised blood ketones",
             "high anion gap metabolic acidosis"),
      lookalikes={
          "Viral gastroenteritis":
              "Gastroenteritis causes vomiting and diarrhea with a normal glucose and no "
              "ketoacidosis.",
          "Acute pancreatitis":
              "Pancreatitis causes severe epigastric pain radiating to the back with a very high "
              "lipase; ketoacidosis is unusual.",
          "Acute appendicitis":
              "Appendicitis pain localises to the right lower quadrant with fever, and there is "
              "no hyperglycemia or acidosis.",
      },
      management=("IV 0.9% saline resuscitation", "a fixed-rate IV insulin infusion",
                  "potassium replacement with close monitoring of potassium and glucose",
                  "treat the precipitating cause")),
    C(name="Hypothyroidism", specialty="endocrinology", age=(30, 75),
      aliases=("underactive thyroid", "Hashimoto thyroiditis"),
      summary=("deficient thyroid hormone production, most often from autoimmune (Hashimoto) "
               "thyroiditis"),
      history=("a family history of thyroid disease",),
      symptoms=("fatigue", "weight gain", "cold intolerance", "constipation", "low mood",
                "memory problems", "reduced libido", "proximal muscle weakness",
                "heavy menstrual periods"),
      signs=("dry coarse skin", "slow-relaxing ankle reflexes", "bradycardia", "a diffuse goitre",
             "psychomotor slowing"),
      tests=("raised TSH with low free T4", "positive anti-thyroid peroxidase antibodies",
             "raised serum cholesterol"),
      lookalikes={
          "Major depressive disorder":
              "Depression causes low mood and loss of interest with early morning waking, and "
              "thyroid function is normal.",
          "Iron deficiency anemia":
              "Iron deficiency causes fatigue with pallor and microcytic anemia, without cold "
              "intolerance or a raised TSH.",
          "Addison disease":
              "Addison disease causes weight loss, hyperpigmentation and postural hypotension "
              "with hyponatremia and hyperkalemia.",
          "Cushing syndrome":
              "Cushing syndrome causes central weight gain with purple striae, easy bruising and "
              "proximal weakness, and cortisol fails to suppress.",
      },
      management=("levothyroxine, with the dose titrated to TSH every 6-8 weeks",
                  "a low starting dose in older people or those with heart disease")),
    C(name="Graves disease", specialty="endocrinology", age=(20, 50),
      aliases=("Graves' disease", "hyperthyroidism", "thyrotoxicosis"),
      summary="autoimmune hyperthyroidism caused by antibodies that stimulate the TSH receptor",
      history=("a family history of thyroid disease",),
      symptoms=("palpitations", "heat intolerance", "excessive sweating",
                "weight loss despite increased appetite", "anxiety and irritability",
                "frequent loose stools", "difficulty falling asleep", "restlessness"),
      signs=("a fine tremor of the outstretched hands", "a diffuse goitre", "a thyroid bruit",
             "protruding eyes (exophthalmos)", "tachycardia"),
      tests=("suppressed TSH with raised free T4", "positive TSH receptor antibodies",
             "positive anti-thyroid peroxidase antibodies"),
      lookalikes={
          "Generalized anxiety disorder":
              "Generalized anxiety causes worry and restlessness with normal thyroid function, "
              "without weight loss, goitre or eye signs.",
          "Panic disorder":
              "Panic attacks are discrete episodes of fear lasting minutes, with normal thyroid "
              "function between them.",
          "Atrial fibrillation":
              "Atrial fibrillation causes an irregularly irregular pulse with absent P waves; "
              "thyroid function is normal unless thyrotoxicosis triggered it.",
      },
      management=("a beta-blocker (propranolol) for symptoms",
                  "carbimazole for 12-18 months (propylthiouracil in early pregnancy)",
                  "radioiodine or thyroidectomy for relapse", "stop smoking to protect the eyes")),
    C(name="Addison disease", specialty="endocrinology", age=(20, 60),
      aliases=("Addison's disease", "primary adrenal insufficiency"),
      summary=("primary adrenal insufficiency, usually autoimmune destruction of the adrenal "
               "cortex, causing cortisol and aldosterone deficiency"),
      history=("type 1 diabetes or autoimmune thyroid disease",),
      symptoms=("fatigue", "weight loss", "salt craving", "dizziness on standing",
                "nausea with vomiting", "diffuse abdominal pain"),
      signs=("hyperpigmentation of skin creases and buccal mucosa", "postural hypotension"),
      tests=("hyponatremia with hyperkalemia",
             "low morning cortisol that fails to rise after ACTH stimulation",
             "raised plasma ACTH"),
      lookalikes={
          "Hypothyroidism":
              "Hypothyroidism causes weight gain and cold intolerance with a raised TSH, not "
              "hyperpigmentation or hyperkalemia.",
          "Major depressive disorder":
              "Depression causes fatigue and weight loss with low mood and anhedonia but normal "
              "electrolytes and cortisol.",
          "Celiac disease":
              "Celiac disease causes weight loss and fatigue with diarrhea and positive tTG "
              "antibodies; the two often coexist in people with autoimmune disease.",
          "Viral gastroenteritis":
              "Gastroenteritis causes short-lived vomiting and diarrhea with sick contacts and "
              "no hyperpigmentation.",
      },
      management=("hydrocortisone in divided doses plus fludrocortisone",
                  "sick-day rules (double the hydrocortisone dose during illness) and an "
                  "emergency injection kit",
                   "IV hydrocortisone and saline for adrenal crisis")),
    C(name="Cushing syndrome", specialty="endocrinology", age=(25, 65),
      aliases=("Cushing's syndrome", "hypercortisolism"),
      summary=("chronic glucocorticoid excess, most often from steroid medication or an "
               "ACTH-secreting pituitary adenoma"),
      history=("long-term oral corticosteroid use",),
      symptoms=("weight gain with central obesity", "easy bruising", "proximal muscle weakness",
                "low mood", "acne", "irregular or absent periods"),
      signs=("wide purple abdominal striae", "a rounded moon face with a dorsocervical fat pad",
             "hirsutism", "hypertension"),
      tests=("failure of cortisol suppression on an overnight dexamethasone test",
             "raised 24-hour urinary free cortisol", "raised fasting glucose"),
      lookalikes={
          "Polycystic ovary syndrome":
              "PCOS causes hirsutism and irregular periods from a young age with polycystic "
              "ovaries, but no purple striae, bruising or proximal weakness.",
          "Hypothyroidism":
              "Hypothyroidism causes weight gain with cold intolerance, dry skin and a raised "
              "TSH.",
          "Major depressive disorder":
              "Severe depression can raise cortisol, but the Cushing body habitus, striae and "
              "bruising are absent.",
      },
      management=("taper and stop corticosteroid medication where possible",
                  "transsphenoidal surgery for a pituitary adenoma, or adrenalectomy for an "
                  "adrenal tumour",
                   "treat hypertension, diabetes and bone loss")),
    C(name="Prolactinoma", specialty="endocrinology", age=(20, 45),
      aliases=("hyperprolactinemia",),
      summary=("a benign prolactin-secreting pituitary adenoma, the commonest functioning "
               "pituitary tumour"),
      history=("difficulty conceiving",),
      symptoms=("irregular or absent periods", "milky nipple discharge", "headache",
                "reduced libido"),
      signs=("loss of the outer visual fields of both eyes",),
      tests=("markedly raised serum prolactin", "a pituitary adenoma on MRI",
             "a negative urine pregnancy test"),
      lookalikes={
          "Polycystic ovary syndrome":
              "PCOS causes irregular periods with hirsutism, acne and polycystic ovaries, with a "
              "normal or only slightly raised prolactin.",
          "Hypothyroidism":
              "Hypothyroidism can raise prolactin but causes cold intolerance and weight gain "
              "with a raised TSH.",
          "Cushing syndrome":
              "Cushing syndrome causes menstrual disturbance with central obesity, purple striae "
              "and bruising, and cortisol fails to suppress.",
      },
      management=("a dopamine agonist (cabergoline) as first-line treatment",
                  "repeat MRI and visual field testing",
                  "surgery only if medical treatment fails")),
    # ---------------------------------------- gynecology
    C(name="Polycystic ovary syndrome", specialty="gynecology", age=(16, 35), sex="female",
      aliases=("PCOS",),
      summary=("a common endocrine disorder of women with ovulatory dysfunction, androgen excess "
               "and polycystic ovaries"),
      history=("difficulty conceiving",),
      symptoms=("irregular or absent periods", "excess facial and body hair", "acne",
                "weight gain with central obesity"),
      signs=("hirsutism", "acanthosis nigricans"),
      tests=("polycystic ovaries on pelvic ultrasound", "raised serum testosterone",
             "raised fasting glucose", "a negative urine pregnancy test"),
      lookalikes={
          "Cushing syndrome":
              "Cushing syndrome adds purple striae, easy bruising, proximal weakness and "
              "hypertension, and cortisol does not suppress with dexamethasone.",
          "Hypothyroidism":
              "Hypothyroidism causes menstrual disturbance and weight gain with cold intolerance "
              "and a raised TSH.",
          "Prolactinoma":
              "A prolactinoma causes absent periods with milky nipple discharge, a very high "
              "prolactin and sometimes visual field loss, without hirsutism.",
      },
      management=("weight loss and exercise",
                  "a combined oral contraceptive to regulate periods and reduce hirsutism",
                  "letrozole for ovulation induction", "screening for diabetes and dyslipidemia")),
    # ---------------------------------------- nephrology
    C(name="Acute pyelonephritis", specialty="nephrology", age=(18, 60),
      aliases=("pyelonephritis", "kidney infection"),
      summary=("bacterial infection of the kidney, usually ascending from the bladder "
               "(Escherichia coli)"),
      history=(),
      symptoms=("fever", "rigors", "flank pain", "dysuria with urinary frequency",
                "nausea with vomiting"),
      signs=("costovertebral angle tenderness",),
      tests=("leukocytes and nitrites on urine dipstick", "Escherichia coli on urine culture",
             "elevated white cell count", "white cell casts in the urine"),
      lookalikes={
          "Acute cystitis":
              "Cystitis causes dysuria, frequency and suprapubic pain without fever, rigors or "
              "flank pain.",
          "Nephrolithiasis":
              "Renal colic causes severe colicky loin-to-groin pain with hematuria; fever with a "
              "stone means an infected obstructed kidney, an emergency.",
          "Acute appendicitis":
              "Appendicitis causes migrating right lower quadrant pain with peritonism and a "
              "normal or only mildly abnormal urine.",
          "Pelvic inflammatory disease":
              "PID causes lower abdominal pain with vaginal discharge and cervical motion "
              "tenderness.",
          "Acute cholecystitis":
              "Cholecystitis causes right upper quadrant pain with a positive Murphy sign and a "
              "normal urine dipstick.",
      },
      management=("oral antibiotics (e.g. cefalexin, co-amoxiclav or ciprofloxacin) for 7-10 "
                  "days, guided by urine culture",
                   "IV antibiotics (e.g. ceftriaxone) and fluids if vomiting or septic",
                  "imaging if there is no improvement within 48 hours")),
    C(name="Acute cystitis", specialty="nephrology", age=(18, 65), sex="female",
      aliases=("cystitis", "lower urinary tract infection", "bladder infection"),
      summary="bacterial infection of the bladder, common in women because of the short urethra",
      history=("recent sexual intercourse",),
      symptoms=("dysuria with urinary frequency", "urinary urgency", "suprapubic pain",
                "cloudy foul-smelling urine"),
      signs=("suprapubic tenderness",),
      tests=("leukocytes and nitrites on urine dipstick",
             "microscopic hematuria on urine dipstick", "Escherichia coli on urine culture"),
      lookalikes={
          "Acute pyelonephritis":
              "Pyelonephritis adds fever, rigors, flank pain and costovertebral angle "
              "tenderness.",
          "Nephrolithiasis":
              "A stone causes colicky flank pain radiating to the groin with hematuria, and "
              "dysuria only when it is near the bladder.",
          "Pelvic inflammatory disease":
              "PID causes pelvic pain with vaginal discharge, fever and cervical motion "
              "tenderness.",
      },
      management=("nitrofurantoin for 3 days (or trimethoprim or pivmecillinam by local "
                  "resistance)",
                   "fluids and simple analgesia",
                  "urine culture in pregnancy, in men, or for recurrent infection")),
    # ---------------------------------------- urology
    C(name="Nephrolithiasis", specialty="urology", age=(25, 60),
      aliases=("kidney stone", "renal colic", "urolithiasis"),
      summary=("stones in the urinary tract, most often calcium oxalate, causing colic when they "
               "obstruct the ureter"),
      history=("low fluid intake", "previous kidney stones"),
      symptoms=("flank pain", "severe colicky pain radiating to the groin",
                "restlessness, unable to find a comfortable position", "nausea with vomiting"),
      signs=("costovertebral angle tenderness",),
      tests=("microscopic hematuria on urine dipstick",
             "a ureteric stone on non-contrast CT of the urinary tract",
             "hydronephrosis on ultrasound"),
      lookalikes={
          "Acute pyelonephritis":
              "Pyelonephritis causes constant flank pain with fever, rigors and pyuria rather "
              "than colicky pain with hematuria.",
          "Acute appendicitis":
              "Appendicitis causes steady pain that migrates to the right lower quadrant with "
              "peritonism; the patient lies still.",
          "Ectopic pregnancy":
              "Ectopic pregnancy causes lower abdominal pain with a missed period, vaginal "
              "bleeding and a positive pregnancy test.",
          "Diverticulitis":
              "Diverticulitis causes constant left lower quadrant pain with fever and localized "
              "tenderness.",
      },
      management=("NSAID analgesia (e.g. diclofenac)", "tamsulosin for distal stones under 10 mm",
                  "urgent decompression (nephrostomy or stent) if the obstructed kidney is "
                  "infected",
                   "more fluid intake to prevent recurrence")),
    # ---------------------------------------- nephrology
    C(name="Nephrotic syndrome", specialty="nephrology", age=(2, 60),
      aliases=("minimal change disease",),
      summary=("heavy glomerular protein loss causing proteinuria, hypoalbuminemia and edema; "
               "minimal change disease in children, membranous nephropathy in adults"),
      history=(),
      symptoms=("frothy urine", "swelling of the legs and face", "weight gain"),
      signs=("periorbital edema", "bilateral pitting leg edema"),
      tests=("proteinuria above 3.5 g per day", "low serum albumin", "raised serum cholesterol"),
      lookalikes={
          "Post-streptococcal glomerulonephritis":
              "Post-streptococcal glomerulonephritis is nephritic: cola-coloured urine, "
              "hypertension and red cell casts with only mild proteinuria, after a sore throat.",
          "Heart failure":
              "Heart failure edema comes with orthopnea, raised JVP and a high BNP, while urine "
              "protein and albumin are normal.",
          "Hypothyroidism":
              "Hypothyroidism causes non-pitting puffiness with cold intolerance and a raised "
              "TSH, without heavy proteinuria.",
      },
      management=("oral prednisolone (most children with minimal change disease respond)",
                  "an ACE inhibitor, a loop diuretic and salt restriction for edema",
                  "a statin, and anticoagulation if albumin is very low")),
    C(name="Post-streptococcal glomerulonephritis", specialty="nephrology", age=(3, 12),
      aliases=("acute nephritic syndrome",),
      summary=("immune-complex glomerulonephritis that follows a group A streptococcal throat or "
               "skin infection"),
      history=("a sore throat or skin infection two weeks earlier",),
      symptoms=("cola-coloured urine", "swelling of the legs and face", "reduced urine output"),
      signs=("periorbital edema", "hypertension"),
      tests=("red cell casts in the urine", "microscopic hematuria on urine dipstick",
             "low complement C3", "raised antistreptolysin O titre", "mild proteinuria"),
      lookalikes={
          "Nephrotic syndrome":
              "Nephrotic syndrome causes heavy proteinuria and a low albumin without visible "
              "hematuria, hypertension or low C3.",
          "Henoch-Schonlein purpura":
              "IgA vasculitis comes with palpable purpura on the buttocks and legs, abdominal "
              "pain and arthralgia, and complement is normal.",
          "Acute pyelonephritis":
              "Pyelonephritis causes fever, flank pain and pyuria with nitrites, not red cell "
              "casts and low complement.",
      },
      management=("salt and fluid restriction and a loop diuretic for edema and hypertension",
                  "penicillin if streptococcal infection persists",
                  "monitor renal function; most children recover fully")),
    # ---------------------------------------- infectious disease
    C(name="Infectious mononucleosis", specialty="infectious disease", age=(14, 25),
      aliases=("glandular fever", "mononucleosis", "Epstein-Barr virus infection"),
      summary=("acute Epstein-Barr virus infection, typically of adolescents and young adults, "
               "spread by saliva"),
      history=("a rash after taking amoxicillin",),
      symptoms=("sore throat", "painful swallowing", "fever", "fatigue"),
      signs=("posterior cervical lymphadenopathy", "tonsillar exudate", "splenomegaly",
             "palatal petechiae"),
      tests=("atypical lymphocytes on blood film",
             "a positive heterophile antibody (Monospot) test",
             "mildly raised liver transaminases"),
      lookalikes={
          "Streptococcal pharyngitis":
              "Strep throat causes tender anterior cervical nodes without splenomegaly or marked "
              "fatigue, and a rapid strep test is positive.",
          "Hodgkin lymphoma":
              "Hodgkin lymphoma causes painless rubbery nodes over months with night sweats and "
              "Reed-Sternberg cells on biopsy.",
          "Influenza":
              "Influenza causes abrupt fever, myalgia and dry cough without exudative "
              "tonsillitis or splenomegaly.",
      },
      management=("supportive care with fluids and paracetamol or ibuprofen",
                  "no contact sports for at least 3 weeks because of the risk of splenic rupture",
                  "avoid amoxicillin, which causes a rash")),
    C(name="Streptococcal pharyngitis", specialty="infectious disease", age=(5, 15),
      aliases=("strep throat",),
      summary="acute tonsillopharyngitis caused by group A beta-hemolytic streptococcus",
      history=("sick contacts with similar symptoms",),
      symptoms=("abrupt onset of symptoms", "sore throat", "fever", "painful swallowing",
                "headache"),
      signs=("tonsillar exudate", "tender anterior cervical lymphadenopathy"),
      tests=("a positive rapid streptococcal antigen test",
             "group A streptococcus on throat culture"),
      lookalikes={
          "Infectious mononucleosis":
              "Glandular fever causes marked fatigue, posterior cervical nodes, splenomegaly and "
              "atypical lymphocytes.",
          "Epiglottitis":
              "Epiglottitis causes drooling, stridor and a muffled voice in a toxic child "
              "sitting forward; the throat must not be examined.",
          "Influenza":
              "Influenza causes cough, myalgia and a runny nose without tonsillar exudate or "
              "tender anterior nodes.",
      },
      management=("phenoxymethylpenicillin (penicillin V) for 10 days (clarithromycin if "
                  "allergic)",
                   "paracetamol or ibuprofen and fluids")),
    C(name="Influenza", specialty="infectious disease", age=(5, 80),
      aliases=("flu",),
      summary=("acute respiratory infection by influenza A or B virus, occurring in winter "
               "epidemics"),
      history=("onset during the winter season", "sick contacts with similar symptoms"),
      symptoms=("abrupt onset of symptoms", "fever", "myalgia", "headache", "dry cough",
                "sore throat"),
      signs=("a clear chest on auscultation",),
      tests=("a positive influenza PCR on nasal swab", "clear chest X-ray"),
      lookalikes={
          "Community-acquired pneumonia":
              "Pneumonia causes productive cough, pleuritic pain, focal crackles and "
              "consolidation on chest X-ray.",
          "Streptococcal pharyngitis":
              "Strep throat causes exudative tonsillitis with tender anterior nodes, usually "
              "without cough.",
          "Infectious mononucleosis":
              "Glandular fever causes prolonged fatigue with posterior nodes, splenomegaly and "
              "atypical lymphocytes.",
          "Bacterial meningitis":
              "Meningitis adds neck stiffness, photophobia, confusion and sometimes a petechial "
              "rash.",
      },
      management=("rest, fluids and antipyretics",
                  "oseltamivir within 48 hours for high-risk or severely ill patients",
                  "annual vaccination for high-risk groups")),
    C(name="Cellulitis", specialty="infectious disease", age=(30, 80),
      summary=("acute bacterial infection of the dermis and subcutaneous tissue, usually by "
               "Streptococcus pyogenes or Staphylococcus aureus"),
      history=("a break in the skin such as a cut or athlete's foot", "type 2 diabetes mellitus"),
      symptoms=("painful spreading redness of one leg", "fever"),
      signs=("warm tender erythema with poorly defined margins", "unilateral leg swelling"),
      tests=("elevated white cell count", "raised CRP and ESR"),
      lookalikes={
          "Deep vein thrombosis":
              "DVT causes calf swelling and tenderness without spreading redness or fever, and "
              "compression ultrasound shows the clot.",
          "Contact dermatitis":
              "Contact dermatitis is itchy rather than painful, sharply bordered at the contact "
              "site, and causes no fever.",
          "Gout":
              "Gout centres on a joint, classically the big toe, with urate crystals in the "
              "joint fluid.",
          "Lyme disease":
              "Erythema migrans expands slowly from a tick bite with central clearing and is "
              "warm but rarely tender.",
      },
      management=("oral flucloxacillin (clarithromycin or doxycycline if penicillin-allergic)",
                  "IV antibiotics if systemically unwell or rapidly spreading",
                  "mark the margin, elevate the limb and treat athlete's foot")),
    C(name="Lyme disease", specialty="infectious disease", age=(5, 70),
      aliases=("Lyme borreliosis", "borreliosis"),
      summary=("tick-borne infection with Borrelia burgdorferi, common in wooded areas of North "
               "America and Europe"),
      history=("a tick bite while hiking in woodland",),
      symptoms=("fever", "fatigue", "myalgia", "joint pain", "headache"),
      signs=("erythema migrans (an expanding ring-shaped rash)",
             "facial weakness involving the forehead on one side"),
      tests=("positive Borrelia serology",),
      lookalikes={
          "Cellulitis":
              "Cellulitis is painful, hot and rapidly spreading with ill-defined margins and no "
              "history of tick bite.",
          "Tinea corporis":
              "Tinea corporis is itchy and scaly at the advancing edge, grows slowly over weeks, "
              "and KOH microscopy shows hyphae.",
          "Bell palsy":
              "Bell palsy is an isolated facial palsy without rash, fever, joint pain or tick "
              "exposure.",
          "Influenza":
              "Influenza causes fever and aches without a rash and settles within a week.",
      },
      management=("oral doxycycline for 2-3 weeks (amoxicillin for young children or in "
                  "pregnancy)",
                   "IV ceftriaxone for carditis or meningitis",
                  "tick avoidance and prompt tick removal")),
    # ---------------------------------------- hematology
    C(name="Iron deficiency anemia", specialty="hematology", age=(15, 80),
      aliases=("iron deficiency",),
      summary=("anemia from depleted iron stores, usually through menstrual or gastrointestinal "
               "blood loss or malabsorption"),
      history=("regular NSAID use",),
      symptoms=("fatigue", "dyspnea on exertion", "craving to eat ice (pica)",
                "heavy menstrual periods"),
      signs=("pallor", "spoon-shaped nails (koilonychia)", "angular cheilitis"),
      tests=("microcytic anemia", "low serum ferritin"),
      lookalikes={
          "Vitamin B12 deficiency anemia":
              "B12 deficiency gives a macrocytic anemia with glossitis and neurological signs.",
          "Hypothyroidism":
              "Hypothyroidism causes fatigue with cold intolerance, weight gain and a raised "
              "TSH, and any anemia is usually normocytic.",
          "Celiac disease":
              "Celiac disease is a common cause of unexplained iron deficiency, with bloating or "
              "diarrhea and positive tTG antibodies.",
          "Major depressive disorder":
              "Depression causes fatigue with low mood and anhedonia but a normal blood count.",
      },
      management=("oral iron (ferrous sulfate once daily or on alternate days)",
                  "find and treat the cause: menstrual loss, and endoscopy in men and "
                  "postmenopausal women",
                   "IV iron if oral iron fails or is not tolerated")),
    C(name="Vitamin B12 deficiency anemia", specialty="hematology", age=(40, 85),
      aliases=("pernicious anemia", "B12 deficiency"),
      summary=("megaloblastic anemia with neurological damage from lack of vitamin B12, most "
               "often autoimmune pernicious anemia"),
      history=("a strict vegan diet", "type 1 diabetes or autoimmune thyroid disease",
               "long-term metformin use"),
      symptoms=("fatigue", "tingling and numbness in the hands and feet", "sore red tongue",
                "unsteady gait", "unsteadiness worse in the dark", "memory problems"),
      signs=("pallor", "loss of vibration and position sense in the feet", "mild jaundice"),
      tests=("macrocytic anemia", "low serum vitamin B12", "anti-intrinsic factor antibodies",
             "hypersegmented neutrophils on blood film"),
      lookalikes={
          "Iron deficiency anemia":
              "Iron deficiency gives a microcytic anemia with a low ferritin and no neurological "
              "signs.",
          "Hypothyroidism":
              "Hypothyroidism can cause mild macrocytosis and fatigue but with cold intolerance, "
              "weight gain and a raised TSH.",
          "Multiple sclerosis":
              "Multiple sclerosis causes relapsing symptoms such as optic neuritis with white "
              "matter lesions on MRI and a normal blood count.",
          "Guillain-Barre syndrome":
              "Guillain-Barre syndrome causes weakness ascending over days with areflexia after "
              "an infection, not slowly progressive sensory loss with anemia.",
      },
      management=("intramuscular hydroxocobalamin loading doses, then every 2-3 months for life "
                  "in pernicious anemia",
                   "oral B12 for dietary deficiency",
                  "give folic acid only after B12 has been started")),
    C(name="Immune thrombocytopenia", specialty="hematology", age=(2, 40),
      aliases=("ITP", "immune thrombocytopenic purpura"),
      summary=("autoimmune destruction of platelets causing isolated thrombocytopenia; in "
               "children it usually follows a viral infection and resolves"),
      history=("a recent viral upper respiratory infection",),
      symptoms=("easy bruising", "nosebleeds", "bleeding gums"),
      signs=("a non-blanching petechial rash", "no lymphadenopathy or splenomegaly"),
      tests=("a low platelet count", "an otherwise normal full blood count and blood film",
             "normal coagulation studies"),
      lookalikes={
          "Henoch-Schonlein purpura":
              "IgA vasculitis causes palpable purpura on the buttocks and legs with abdominal "
              "pain, arthritis and a normal platelet count.",
          "Bacterial meningitis":
              "Meningococcal disease causes a petechial rash in a febrile, unwell patient with "
              "neck stiffness.",
          "Systemic lupus erythematosus":
              "Lupus can lower platelets but also causes arthritis, rash, mouth ulcers and a "
              "positive ANA.",
      },
      management=("observation in children with mild or no bleeding",
                  "oral corticosteroids or IV immunoglobulin for significant bleeding or very "
                  "low platelets",
                   "avoid NSAIDs and contact sports while platelets are low")),
    C(name="Deep vein thrombosis", specialty="hematology", age=(30, 80),
      aliases=("DVT",),
      summary="thrombus in a deep vein, usually of the leg, which can embolise to the lungs",
      history=("recent immobilisation after surgery or long-haul travel", "oral contraceptive use",
               "active cancer"),
      symptoms=("unilateral calf pain",),
      signs=("unilateral calf swelling and tenderness", "unilateral leg swelling",
             "dilated superficial leg veins"),
      tests=("elevated D-dimer", "a non-compressible deep vein on compression ultrasound"),
      lookalikes={
          "Cellulitis":
              "Cellulitis causes spreading warm erythema with fever and raised inflammatory "
              "markers, and ultrasound shows no clot.",
          "Heart failure":
              "Heart failure edema is bilateral, with raised JVP and orthopnea.",
          "Nephrotic syndrome":
              "Nephrotic edema is bilateral with periorbital swelling, heavy proteinuria and a "
              "low albumin.",
      },
      management=("anticoagulation with a DOAC or low-molecular-weight heparin for at least 3 "
                  "months",
                   "early mobilisation",
                  "look for cancer if unprovoked and clinically suspected")),
    C(name="Hodgkin lymphoma", specialty="hematology", age=(15, 35),
      aliases=("Hodgkin disease",),
      summary="a B-cell lymphoma defined by Reed-Sternberg cells, with a peak in young adults",
      history=("previous Epstein-Barr virus infection",),
      symptoms=("a painless lump in the neck", "night sweats", "weight loss", "fever",
                "generalized itching", "pain in lymph nodes after drinking alcohol"),
      signs=("painless rubbery cervical lymphadenopathy", "splenomegaly"),
      tests=("Reed-Sternberg cells on lymph node biopsy", "a mediastinal mass on chest X-ray",
             "raised CRP and ESR"),
      lookalikes={
          "Infectious mononucleosis":
              "Glandular fever causes tender nodes with sore throat and fever that settle within "
              "weeks, with atypical lymphocytes and a positive Monospot test.",
          "Pulmonary tuberculosis":
              "Tuberculosis causes night sweats and weight loss with chronic cough, cavitation "
              "and acid-fast bacilli.",
          "Streptococcal pharyngitis":
              "Strep throat causes tender anterior nodes with exudative tonsillitis that settle "
              "with the infection.",
      },
      management=("excision lymph node biopsy and PET-CT staging",
                  "ABVD chemotherapy with or without radiotherapy",
                  "fertility counselling before treatment")),
    # ---------------------------------------- rheumatology
    C(name="Rheumatoid arthritis", specialty="rheumatology", age=(30, 65),
      aliases=("RA",),
      summary=("chronic autoimmune inflammatory arthritis of the synovium, typically symmetrical "
               "and affecting the small joints of the hands and feet"),
      history=("current cigarette smoking", "a family history of autoimmune disease"),
      symptoms=("symmetrical pain and swelling of the small joints of the hands",
                "morning stiffness lasting more than an hour", "fatigue"),
      signs=("boggy swelling of the MCP and PIP joints", "rheumatoid nodules on the elbows"),
      tests=("positive anti-CCP antibodies", "positive rheumatoid factor",
             "periarticular erosions on hand X-ray", "raised CRP and ESR"),
      lookalikes={
          "Osteoarthritis":
              "Osteoarthritis causes bony swelling of the DIP joints with pain on use and brief "
              "stiffness, and inflammatory markers are normal.",
          "Systemic lupus erythematosus":
              "Lupus arthritis is non-erosive, with malar rash, mouth ulcers, anti-dsDNA "
              "antibodies and low complement.",
          "Gout":
              "Gout attacks are acute and usually affect one joint, with needle-shaped crystals "
              "in the joint fluid.",
          "Polymyalgia rheumatica":
              "PMR affects the shoulder and hip girdles of people over 50, sparing the small "
              "joints, with negative rheumatoid factor and anti-CCP.",
      },
      management=("methotrexate as first-line DMARD, with folic acid",
                  "a short course of corticosteroids as bridging therapy",
                  "a biologic (e.g. anti-TNF) if disease remains active",
                  "treat to target with regular disease activity scores")),
    C(name="Osteoarthritis", specialty="rheumatology", age=(50, 85),
      aliases=("OA",),
      summary=("degenerative joint disease with cartilage loss and bony remodelling, mostly of "
               "the knees, hips and hands"),
      history=("obesity", "previous joint injury"),
      symptoms=("joint pain worse with use and relieved by rest",
                "morning stiffness lasting less than 30 minutes"),
      signs=("bony swelling of the DIP joints (Heberden nodes)", "crepitus on joint movement"),
      tests=("joint space narrowing with osteophytes on X-ray", "normal CRP and ESR"),
      lookalikes={
          "Rheumatoid arthritis":
              "RA causes symmetrical swelling of MCP and PIP joints with prolonged morning "
              "stiffness, raised inflammatory markers and anti-CCP antibodies.",
          "Gout":
              "Gout causes sudden attacks of a hot, red, exquisitely tender joint with urate "
              "crystals.",
          "Septic arthritis":
              "A septic joint is acutely hot and swollen with fever and cannot be moved.",
          "Polymyalgia rheumatica":
              "PMR causes bilateral shoulder and hip girdle stiffness with a high ESR and a "
              "dramatic response to low-dose steroids.",
      },
      management=("exercise, physiotherapy and weight loss",
                  "topical NSAIDs, then oral NSAIDs with gastric protection",
                  "joint replacement for severe pain and disability")),
    C(name="Gout", specialty="rheumatology", age=(40, 75),
      summary=("inflammatory arthritis from monosodium urate crystal deposition when serum urate "
               "is high"),
      history=("heavy alcohol use", "thiazide diuretic use",
               "a diet rich in red meat and seafood"),
      symptoms=("a single hot painful swollen joint",
                "sudden severe joint pain starting at night"),
      signs=("a hot swollen red big toe joint", "tophi on the ears or fingers"),
      tests=("needle-shaped negatively birefringent crystals in joint fluid", "raised serum urate",
             "raised CRP and ESR"),
      lookalikes={
          "Septic arthritis":
              "Septic arthritis causes a hot swollen joint with fever, turbid synovial fluid and "
              "organisms on gram stain; both can coexist, so the joint is aspirated.",
          "Cellulitis":
              "Cellulitis causes spreading redness of the skin rather than pain centred on a "
              "joint, and joint movement is relatively preserved.",
          "Rheumatoid arthritis":
              "RA causes a symmetrical small-joint polyarthritis with morning stiffness and "
              "anti-CCP antibodies.",
          "Osteoarthritis":
              "OA causes chronic pain on use with bony swelling, not sudden hot attacks.",
      },
      management=("an NSAID, colchicine or a short course of corticosteroids for the acute attack",
                  "allopurinol to lower urate below 360 micromol/L once the attack settles",
                  "less alcohol and a review of thiazides")),
    C(name="Septic arthritis", specialty="rheumatology", age=(2, 80),
      summary=("bacterial infection of a joint, most often by Staphylococcus aureus; a "
               "joint-destroying emergency"),
      history=("a prosthetic joint or recent joint injection", "type 2 diabetes mellitus"),
      symptoms=("a single hot painful swollen joint", "fever", "inability to bear weight"),
      signs=("a hot swollen knee with severely restricted movement",),
      tests=("turbid synovial fluid with more than 50,000 white cells per microlitre",
             "gram-positive cocci on synovial fluid gram stain", "elevated white cell count",
             "raised CRP and ESR"),
      lookalikes={
          "Gout":
              "Gout causes recurrent attacks, often of the big toe, with urate crystals in a "
              "sterile joint fluid.",
          "Cellulitis":
              "Cellulitis over a joint reddens the skin but the joint itself can be moved "
              "without severe pain.",
          "Rheumatoid arthritis":
              "RA is a symmetrical polyarthritis of small joints with morning stiffness rather "
              "than one hot joint with fever.",
          "Lyme disease":
              "Lyme arthritis causes intermittent knee swelling months after a tick bite, with "
              "positive Borrelia serology.",
      },
      management=("urgent joint aspiration for culture before antibiotics",
                  "IV flucloxacillin, adjusted to culture, for several weeks",
                  "joint washout by orthopedics")),
    C(name="Systemic lupus erythematosus", specialty="rheumatology", age=(15, 45), sex="female",
      aliases=("SLE", "lupus"),
      summary=("a chronic multisystem autoimmune disease with antinuclear antibodies and "
               "immune-complex damage"),
      history=("a family history of autoimmune disease",),
      symptoms=("symmetrical pain and swelling of the small joints of the hands", "fatigue",
                "a facial rash after sun exposure", "hair loss", "mouth ulcers",
                "pleuritic chest pain", "easy bruising", "fever"),
      signs=("a malar rash sparing the nasolabial folds",),
      tests=("positive ANA", "positive anti-double-stranded DNA antibodies",
             "low complement C3 and C4", "a low platelet count",
             "a pericardial effusion on echocardiography"),
      lookalikes={
          "Rheumatoid arthritis":
              "RA causes erosive symmetrical small-joint arthritis with anti-CCP antibodies, "
              "without malar rash or anti-dsDNA.",
          "Acute pericarditis":
              "Idiopathic pericarditis follows a viral illness in a person without rash, "
              "arthritis or autoantibodies.",
          "Immune thrombocytopenia":
              "ITP causes isolated thrombocytopenia with bruising in an otherwise well patient "
              "with a negative ANA.",
      },
      management=("hydroxychloroquine for all patients",
                  "NSAIDs and short courses of corticosteroids for flares",
                  "immunosuppression (e.g. mycophenolate) for nephritis or organ involvement",
                  "sun protection")),
    C(name="Polymyalgia rheumatica", specialty="rheumatology", age=(60, 85),
      aliases=("PMR",),
      summary=("an inflammatory condition of older adults causing pain and stiffness of the "
               "shoulder and hip girdles, closely linked to giant cell arteritis"),
      history=(),
      symptoms=("bilateral shoulder and hip girdle pain and stiffness",
                "morning stiffness lasting more than an hour", "fatigue", "weight loss"),
      signs=("painful restricted shoulder movement with normal muscle strength",),
      tests=("raised CRP and ESR", "normal creatine kinase"),
      lookalikes={
          "Rheumatoid arthritis":
              "Late-onset RA involves the small joints of the hands with synovitis and anti-CCP "
              "antibodies.",
          "Giant cell arteritis":
              "Giant cell arteritis causes new headache, scalp tenderness, jaw claudication and "
              "visual symptoms; the two often occur together.",
          "Hypothyroidism":
              "Hypothyroidism causes aches and fatigue with cold intolerance and a raised TSH "
              "but a normal ESR.",
          "Osteoarthritis":
              "OA of the shoulders or hips causes pain on use with normal inflammatory markers.",
      },
      management=("oral prednisolone 15 mg daily, with a dramatic response within days, then a "
                  "slow taper",
                   "bone protection with calcium, vitamin D and a bisphosphonate",
                  "warn about the symptoms of giant cell arteritis")),
    C(name="Giant cell arteritis", specialty="rheumatology", age=(60, 85),
      aliases=("temporal arteritis",),
      summary=("granulomatous vasculitis of large and medium arteries, especially the temporal "
               "artery, in people over 50; it can cause sudden blindness"),
      history=(),
      symptoms=("new temporal headache", "jaw pain on chewing (jaw claudication)",
                "scalp tenderness", "transient visual disturbance",
                "transient loss of vision in one eye",
                "bilateral shoulder and hip girdle pain and stiffness", "fatigue"),
      signs=("a tender thickened temporal artery with a reduced pulse",),
      tests=("raised CRP and ESR", "granulomatous inflammation on temporal artery biopsy",
             "a halo sign on temporal artery ultrasound"),
      lookalikes={
          "Migraine":
              "Migraine starts in younger people with recurrent throbbing attacks, without jaw "
              "claudication or a raised ESR.",
          "Tension-type headache":
              "Tension-type headache is band-like and long-standing, with normal inflammatory "
              "markers and no visual symptoms.",
          "Polymyalgia rheumatica":
              "PMR causes girdle stiffness without headache, jaw claudication or visual "
              "symptoms; the two often coexist and share a raised ESR.",
          "Ischemic stroke":
              "A stroke affecting vision causes sudden persistent loss with other focal signs, "
              "without scalp tenderness or a raised ESR.",
      },
      management=("high-dose prednisolone started immediately, before biopsy results",
                  "IV methylprednisolone if vision is affected",
                  "temporal artery biopsy or ultrasound within days", "bone protection")),
    # ---------------------------------------- dermatology
    C(name="Psoriasis", specialty="dermatology", age=(15, 65),
      summary=("a chronic immune-mediated skin disease with accelerated keratinocyte turnover, "
               "producing scaly plaques"),
      history=("a family history of psoriasis", "symptoms worse with stress"),
      symptoms=("an itchy rash", "dry skin", "thick scaly patches on the elbows and knees"),
      signs=("a sharply demarcated rash", "a scaly rash",
             "red plaques with silvery scale on extensor surfaces", "nail pitting and onycholysis",
             "plaques along the scalp hairline"),
      tests=(),
      lookalikes={
          "Atopic dermatitis":
              "Atopic eczema is ill-defined and affects the flexures of an atopic patient, with "
              "intense itch and lichenification rather than silvery scale.",
          "Tinea corporis":
              "Tinea forms an annular plaque with an active scaly edge and central clearing, and "
              "KOH microscopy shows hyphae.",
          "Contact dermatitis":
              "Contact dermatitis is confined to the site of exposure, appears after a new "
              "product and clears when it is avoided.",
      },
      management=("emollients plus a topical corticosteroid with a vitamin D analogue "
                  "(calcipotriol)",
                   "narrowband UVB phototherapy for extensive disease",
                  "methotrexate, ciclosporin or biologics for severe disease",
                  "screening for psoriatic arthritis")),
    C(name="Atopic dermatitis", specialty="dermatology", age=(1, 15),
      aliases=("atopic eczema",),
      summary=("a chronic relapsing itchy inflammatory skin disease of atopic people with a "
               "defective skin barrier"),
      history=("a personal or family history of atopy",),
      symptoms=("an itchy rash", "dry skin"),
      signs=("ill-defined eczematous patches in the elbow and knee flexures",
             "lichenification from scratching", "a scaly rash", "small vesicles"),
      tests=("raised total IgE",),
      lookalikes={
          "Psoriasis":
              "Psoriasis produces well-demarcated plaques with silvery scale on extensor "
              "surfaces, with nail pitting.",
          "Contact dermatitis":
              "Allergic contact dermatitis appears at the site of a specific exposure and is "
              "confirmed by patch testing.",
          "Tinea corporis":
              "Tinea is usually a single annular plaque with a scaly edge that spreads outwards; "
              "scrapings show fungal hyphae.",
      },
      management=("liberal emollients and soap substitutes",
                  "topical corticosteroids for flares, with potency matched to severity",
                  "topical calcineurin inhibitors for the face", "treat secondary infection")),
    C(name="Contact dermatitis", specialty="dermatology", age=(18, 65),
      summary=("eczematous inflammation caused by an irritant or by allergy to a substance "
               "touching the skin, such as nickel"),
      history=("new exposure to nickel jewellery, a cosmetic or rubber gloves",),
      symptoms=("an itchy rash", "burning of the skin"),
      signs=("an eczematous rash matching the area of contact", "a sharply demarcated rash",
             "small vesicles", "lichenification from scratching"),
      tests=("a positive patch test",),
      lookalikes={
          "Atopic dermatitis":
              "Atopic eczema starts in childhood in the flexures with a personal or family "
              "history of atopy.",
          "Cellulitis":
              "Cellulitis is painful rather than itchy, with fever and ill-defined spreading "
              "redness.",
          "Psoriasis":
              "Psoriasis forms chronic silvery plaques on extensor surfaces unrelated to an "
              "exposure.",
          "Tinea corporis":
              "Tinea forms annular scaly plaques with central clearing and fungal hyphae on KOH "
              "microscopy.",
      },
      management=("identify and avoid the allergen or irritant",
                  "a short course of topical corticosteroid",
                  "emollients and barrier protection")),
    C(name="Tinea corporis", specialty="dermatology", age=(5, 60),
      aliases=("ringworm",),
      summary="a superficial dermatophyte fungal infection of the skin of the trunk or limbs",
      history=("contact with an infected pet or contact sports",),
      symptoms=("an itchy rash", "a slowly enlarging ring-shaped patch"),
      signs=("an annular plaque with central clearing and a raised edge", "a scaly rash",
             "a sharply demarcated rash"),
      tests=("fungal hyphae on potassium hydroxide (KOH) microscopy of skin scrapings",),
      lookalikes={
          "Psoriasis":
              "Psoriasis plaques are thick with silvery scale throughout, symmetrical on "
              "extensor surfaces, without central clearing.",
          "Atopic dermatitis":
              "Eczema is ill-defined and flexural, and KOH microscopy is negative.",
          "Lyme disease":
              "Erythema migrans follows a tick bite, is not scaly, and comes with fever and "
              "aches.",
          "Contact dermatitis":
              "Contact dermatitis matches the area of exposure and is vesicular rather than "
              "annular.",
      },
      management=("a topical antifungal (terbinafine or clotrimazole) for 2-4 weeks",
                  "oral terbinafine for extensive disease",
                  "no topical steroids, which make it worse")),
    # ---------------------------------------- psychiatry
    C(name="Major depressive disorder", specialty="psychiatry", age=(18, 70),
      aliases=("clinical depression", "major depression"),
      summary=("a mood disorder with at least two weeks of persistent low mood or loss of "
               "interest that impairs functioning"),
      history=("a previous depressive episode",),
      symptoms=("low mood", "loss of interest and pleasure", "early morning waking",
                "difficulty falling asleep", "poor concentration", "fatigue", "weight loss"),
      signs=("psychomotor slowing",),
      tests=("normal thyroid function tests", "a normal full blood count"),
      lookalikes={
          "Hypothyroidism":
              "Hypothyroidism causes fatigue and low mood with weight gain, cold intolerance and "
              "a raised TSH.",
          "Bipolar disorder":
              "Bipolar disorder is suspected when there have been episodes of elevated mood, "
              "reduced need for sleep or grandiosity; antidepressants alone can trigger mania.",
          "Generalized anxiety disorder":
              "Generalized anxiety is dominated by persistent worry and tension rather than low "
              "mood and anhedonia.",
          "Iron deficiency anemia":
              "Iron deficiency causes fatigue with pallor and a low hemoglobin and ferritin.",
      },
      management=("assess suicide risk",
                  "psychological therapy (CBT) for mild to moderate depression",
                  "an SSRI such as sertraline for moderate to severe depression, reviewed within "
                  "2 weeks")),
    C(name="Generalized anxiety disorder", specialty="psychiatry", age=(18, 60),
      aliases=("GAD",),
      summary=("chronic, excessive, hard-to-control worry about many everyday matters for at "
               "least six months, with physical symptoms of tension"),
      history=("symptoms worse with stress",),
      symptoms=("excessive worry about everyday matters for more than six months", "restlessness",
                "muscle tension", "difficulty falling asleep", "palpitations",
                "poor concentration"),
      signs=("an unremarkable physical examination",),
      tests=("normal thyroid function tests", "a normal resting ECG"),
      lookalikes={
          "Panic disorder":
              "Panic disorder consists of discrete unexpected attacks of intense fear peaking "
              "within minutes, with fear of further attacks.",
          "Graves disease":
              "Thyrotoxicosis causes weight loss, heat intolerance, tremor and goitre with a "
              "suppressed TSH.",
          "Major depressive disorder":
              "Depression is dominated by low mood and loss of interest, with early morning "
              "waking.",
      },
      management=("psychoeducation and guided self-help, then CBT",
                  "an SSRI (sertraline) for persistent or severe symptoms",
                  "no long-term benzodiazepines")),
    C(name="Panic disorder", specialty="psychiatry", age=(18, 45),
      summary=("recurrent unexpected panic attacks followed by persistent fear of further "
               "attacks or avoidance"),
      history=("symptoms worse with stress",),
      symptoms=("sudden episodes of intense fear peaking within minutes", "palpitations",
                "tingling around the mouth and in the fingers", "sudden-onset dyspnea",
                "chest tightness", "excessive sweating", "fear of having another attack"),
      signs=("an unremarkable physical examination",),
      tests=("a normal resting ECG", "normal thyroid function tests", "normal troponin"),
      lookalikes={
          "Graves disease":
              "Thyrotoxicosis causes continuous rather than episodic symptoms, with weight loss, "
              "tremor and a suppressed TSH.",
          "Atrial fibrillation":
              "Atrial fibrillation causes an irregularly irregular pulse with absent P waves on "
              "ECG.",
          "Stable angina":
              "Angina is triggered by exertion and relieved by rest, with ischemia on stress "
              "testing.",
          "Pulmonary embolism":
              "Embolism causes hypoxemia, tachycardia and a raised D-dimer, with risk factors "
              "for thrombosis.",
          "Generalized anxiety disorder":
              "Generalized anxiety is constant worry about many things rather than discrete "
              "attacks.",
      },
      management=("CBT as first-line treatment", "an SSRI if CBT is not enough",
                  "no benzodiazepines beyond the short term")),
    C(name="Bipolar disorder", specialty="psychiatry", age=(18, 45),
      aliases=("manic depression", "bipolar affective disorder"),
      summary=("a mood disorder with episodes of mania or hypomania, usually alternating with "
               "depression"),
      history=("a previous depressive episode",),
      symptoms=("decreased need for sleep", "pressured speech", "grandiose ideas",
                "reckless spending", "restlessness", "poor concentration"),
      signs=("flight of ideas", "elevated or irritable mood"),
      tests=("a negative urine drug screen", "normal thyroid function tests"),
      lookalikes={
          "Major depressive disorder":
              "Unipolar depression has no history of elevated mood, reduced need for sleep or "
              "grandiosity.",
          "Graves disease":
              "Thyrotoxicosis can cause restlessness and poor sleep, but with heat intolerance, "
              "weight loss, tremor and a suppressed TSH.",
          "Generalized anxiety disorder":
              "Generalized anxiety causes poor sleep from worry, not a reduced need for sleep "
              "with grandiosity.",
      },
      management=("an antipsychotic (e.g. olanzapine) or lithium for acute mania",
                  "lithium as long-term mood stabiliser, with level, renal and thyroid monitoring",
                  "stop antidepressants during mania")),
    # ---------------------------------------- obstetrics
    C(name="Ectopic pregnancy", specialty="obstetrics", age=(18, 40), sex="female",
      aliases=("tubal pregnancy",),
      summary=("implantation of a pregnancy outside the uterine cavity, usually in a fallopian "
               "tube"),
      history=("a missed menstrual period", "previous pelvic infection or tubal surgery"),
      symptoms=("unilateral lower abdominal pain", "light vaginal bleeding", "shoulder tip pain",
                "dizziness on standing"),
      signs=("adnexal tenderness", "cervical motion tenderness",
             "guarding with rebound tenderness"),
      tests=("a positive urine pregnancy test",
             "an empty uterus with an adnexal mass on transvaginal ultrasound"),
      lookalikes={
          "Acute appendicitis":
              "Appendicitis causes periumbilical pain migrating to the right lower quadrant with "
              "fever and a negative pregnancy test.",
          "Ovarian torsion":
              "Torsion causes sudden severe pain with vomiting and an enlarged ovary with "
              "reduced flow; the pregnancy test is negative.",
          "Pelvic inflammatory disease":
              "PID causes bilateral pain with discharge and fever, with a negative pregnancy "
              "test.",
          "Nephrolithiasis":
              "Renal colic causes loin-to-groin pain with hematuria and a negative pregnancy "
              "test.",
      },
      management=("methotrexate for a small unruptured ectopic with low hCG in a stable patient",
                  "laparoscopic salpingectomy if ruptured or unsuitable for medical treatment",
                  "anti-D immunoglobulin if rhesus negative")),
    # ---------------------------------------- gynecology
    C(name="Ovarian torsion", specialty="gynecology", age=(12, 40), sex="female",
      aliases=("adnexal torsion",),
      summary=("twisting of the ovary on its ligaments, usually over a cyst or mass, cutting off "
               "its blood supply"),
      history=("a known ovarian cyst",),
      symptoms=("unilateral lower abdominal pain", "sudden onset of pain during exercise",
                "nausea with vomiting"),
      signs=("adnexal tenderness", "a tender adnexal mass", "guarding with rebound tenderness"),
      tests=("an enlarged ovary with reduced Doppler flow on ultrasound",
             "a negative urine pregnancy test"),
      lookalikes={
          "Ectopic pregnancy":
              "Ectopic pregnancy follows a missed period with vaginal bleeding and a positive "
              "pregnancy test.",
          "Acute appendicitis":
              "Appendicitis causes pain that migrates from the umbilicus to the right lower "
              "quadrant with fever and McBurney point tenderness.",
          "Pelvic inflammatory disease":
              "PID causes bilateral pain with fever, vaginal discharge and cervical motion "
              "tenderness.",
          "Nephrolithiasis":
              "Renal colic causes loin-to-groin colic with hematuria and a restless patient.",
      },
      management=("urgent laparoscopy with detorsion, preserving the ovary where possible",
                  "analgesia and antiemetics")),
    C(name="Pelvic inflammatory disease", specialty="gynecology", age=(16, 35), sex="female",
      aliases=("PID",),
      summary=("ascending infection of the upper female genital tract, usually by Chlamydia "
               "trachomatis or Neisseria gonorrhoeae"),
      history=("a new sexual partner without barrier contraception",),
      symptoms=("bilateral lower abdominal pain", "abnormal vaginal discharge",
                "pain during intercourse", "dysuria with urinary frequency", "fever"),
      signs=("cervical motion tenderness", "adnexal tenderness"),
      tests=("a positive chlamydia or gonorrhoea NAAT", "a negative urine pregnancy test",
             "raised CRP and ESR"),
      lookalikes={
          "Ectopic pregnancy":
              "Ectopic pregnancy causes one-sided pain with a missed period, light bleeding and "
              "a positive pregnancy test.",
          "Acute appendicitis":
              "Appendicitis causes migrating right lower quadrant pain without vaginal "
              "discharge.",
          "Ovarian torsion":
              "Torsion causes sudden severe one-sided pain with vomiting and an enlarged ovary "
              "with reduced flow.",
          "Acute cystitis":
              "Cystitis causes dysuria and frequency with suprapubic pain and a positive urine "
              "dipstick, without discharge.",
      },
      management=("IM ceftriaxone plus oral doxycycline and metronidazole for 14 days",
                  "test and treat sexual partners",
                  "admission if severe, pregnant or with a tubo-ovarian abscess")),
    # ---------------------------------------- pediatrics
    C(name="Croup", specialty="pediatrics", age=(1, 3),
      aliases=("laryngotracheobronchitis",),
      summary=("acute viral laryngotracheobronchitis of young children, usually caused by "
               "parainfluenza virus"),
      history=("a runny nose for a day or two beforehand",),
      symptoms=("a barking seal-like cough", "hoarse voice", "symptoms worse at night", "fever"),
      signs=("inspiratory stridor", "subcostal and intercostal recession"),
      tests=("a steeple sign on neck X-ray",),
      lookalikes={
          "Epiglottitis":
              "Epiglottitis is abrupt, with high fever, drooling and a toxic child sitting "
              "forward, without the barking cough.",
          "Bronchiolitis":
              "Bronchiolitis affects infants under one year with wheeze and fine crackles rather "
              "than stridor.",
          "Asthma":
              "Asthma causes expiratory wheeze, not inspiratory stridor with a barking cough.",
      },
      management=("a single dose of oral dexamethasone",
                  "nebulised adrenaline and oxygen for severe stridor",
                  "keep the child calm on a parent's lap")),
    C(name="Epiglottitis", specialty="pediatrics", age=(2, 7),
      summary=("bacterial infection of the epiglottis, classically by Haemophilus influenzae "
               "type b, that can obstruct the airway"),
      history=("incomplete childhood vaccinations",),
      symptoms=("abrupt onset of symptoms", "fever", "sore throat", "painful swallowing",
                "drooling", "muffled voice"),
      signs=("inspiratory stridor", "a tripod sitting posture", "a toxic appearance"),
      tests=("a thumbprint sign on lateral neck X-ray",),
      lookalikes={
          "Croup":
              "Croup develops over a day or two after a cold, with a barking cough and hoarse "
              "voice in a child who is not toxic and not drooling.",
          "Streptococcal pharyngitis":
              "Strep throat causes sore throat and fever with exudative tonsils but no stridor, "
              "drooling or airway compromise.",
          "Infectious mononucleosis":
              "Glandular fever causes exudative tonsillitis with posterior nodes and "
              "splenomegaly in adolescents, without stridor.",
      },
      management=("do not examine the throat; keep the child calm and call senior anaesthetic "
                  "and ENT help",
                   "secure the airway by intubation in theatre", "IV ceftriaxone",
                  "rifampicin prophylaxis for household contacts")),
    C(name="Bronchiolitis", specialty="pediatrics", age=(2, 12), age_unit="month",
      aliases=("RSV bronchiolitis",),
      summary=("viral lower respiratory tract infection of infants, most often respiratory "
               "syncytial virus (RSV)"),
      history=("onset during the winter season", "a runny nose for a day or two beforehand"),
      symptoms=("dry cough", "poor feeding", "episodic wheezing", "fever"),
      signs=("fine inspiratory crackles and wheeze", "subcostal and intercostal recession",
             "tachypnea"),
      tests=("RSV detected on nasopharyngeal swab", "hypoxemia on pulse oximetry",
             "hyperinflated lungs with flattened diaphragms on chest X-ray"),
      lookalikes={
          "Croup":
              "Croup causes a barking cough with inspiratory stridor in an older toddler, "
              "without crackles.",
          "Asthma":
              "Asthma causes recurrent episodes of wheeze in an older atopic child that respond "
              "to bronchodilators.",
          "Community-acquired pneumonia":
              "Bacterial pneumonia causes high fever and focal signs with consolidation on chest "
              "X-ray.",
      },
      management=("supportive care: nasal suction and small frequent or nasogastric feeds",
                  "oxygen if saturations stay below 90-92%",
                  "no bronchodilators, steroids or antibiotics")),
    C(name="Pyloric stenosis", specialty="pediatrics", age=(2, 8), age_unit="week",
      aliases=("infantile hypertrophic pyloric stenosis",),
      summary=("hypertrophy of the pyloric muscle causing gastric outlet obstruction in young "
               "infants"),
      history=("a family history of pyloric stenosis",),
      symptoms=("projectile non-bilious vomiting after feeds",
                "feeding hungrily straight after vomiting", "poor weight gain"),
      signs=("an olive-sized mass in the right upper abdomen", "visible gastric peristalsis",
             "dry mucous membranes"),
      tests=("hypochloremic hypokalemic metabolic alkalosis",
             "a thickened elongated pylorus on ultrasound"),
      lookalikes={
          "Viral gastroenteritis":
              "Gastroenteritis causes vomiting with diarrhea and fever, often with sick "
              "contacts.",
          "Gastroesophageal reflux disease":
              "Infant reflux causes effortless small-volume regurgitation in a thriving baby, "
              "not forceful projectile vomiting.",
          "Intussusception":
              "Intussusception occurs in older infants with colicky pain and redcurrant jelly "
              "stools.",
      },
      management=("correct dehydration and electrolytes with IV fluids before surgery",
                  "pyloromyotomy")),
    C(name="Intussusception", specialty="pediatrics", age=(6, 24), age_unit="month",
      summary=("telescoping of one segment of bowel into the next, usually ileum into colon, in "
               "infants and toddlers"),
      history=("a recent viral upper respiratory infection",),
      symptoms=("episodes of inconsolable crying with drawing up of the legs",
                "colicky abdominal pain", "nausea with vomiting", "redcurrant jelly stools",
                "lethargy between episodes"),
      signs=("a sausage-shaped mass in the right upper abdomen",),
      tests=("a target sign on abdominal ultrasound",),
      lookalikes={
          "Viral gastroenteritis":
              "Gastroenteritis causes diarrhea and vomiting with fever, without paroxysms of "
              "colic or a mass.",
          "Pyloric stenosis":
              "Pyloric stenosis causes projectile non-bilious vomiting in infants of 2-8 weeks "
              "with an olive-sized mass.",
          "Henoch-Schonlein purpura":
              "IgA vasculitis causes colicky pain with palpable purpura on the legs and buttocks "
              "and arthralgia; it can itself trigger intussusception.",
          "Acute appendicitis":
              "Appendicitis is rare under two and causes constant right lower quadrant pain with "
              "fever.",
      },
      management=("fluid resuscitation", "air enema reduction under imaging guidance",
                  "surgery if the enema fails or there is perforation")),
    C(name="Henoch-Schonlein purpura", specialty="pediatrics", age=(3, 10),
      aliases=("IgA vasculitis", "HSP"),
      summary="IgA-mediated small-vessel vasculitis, the commonest vasculitis of childhood",
      history=("a recent viral upper respiratory infection",),
      symptoms=("a rash on the buttocks and legs", "colicky abdominal pain", "joint pain"),
      signs=("palpable purpura on the buttocks and legs", "swollen tender ankles"),
      tests=("a normal platelet count", "microscopic hematuria on urine dipstick",
             "mild proteinuria"),
      lookalikes={
          "Immune thrombocytopenia":
              "ITP causes flat petechiae and bruising with a low platelet count, without "
              "abdominal pain or arthritis.",
          "Bacterial meningitis":
              "Meningococcal sepsis causes a rapidly spreading non-blanching rash in a febrile, "
              "toxic child.",
          "Intussusception":
              "Intussusception causes colicky pain with redcurrant jelly stools and a "
              "sausage-shaped mass, without a rash.",
          "Post-streptococcal glomerulonephritis":
              "Post-streptococcal glomerulonephritis causes cola-coloured urine, hypertension "
              "and a low C3 after a sore throat, without purpura.",
      },
      management=("supportive care with rest and paracetamol",
                  "monitor blood pressure and urine for kidney involvement for 6-12 months",
                  "corticosteroids for severe abdominal pain")),
)
del C


def sub_table(names, table: tuple[Condition, ...] = CONDITIONS) -> tuple[Condition, ...]:
  """The named conditions (table order), each keeping only its look-alikes among them: a smaller
  world that a few minutes of training can learn (configs/demo.py:small)."""
  known = {c.name for c in table}
  unknown = [n for n in names if n not in known]
  if unknown:
    raise ValueError(f"world conditions: {unknown} are not conditions of clinic_conditions.py")
  keep = set(names)
  return tuple(dataclasses.replace(c, lookalikes={k: v for k, v in c.lookalikes.items()
                                                  if k in keep})
               for c in table if c.name in keep)
