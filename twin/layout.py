"""Name the columns of the twin's state and parameter arrays.

The kernel works on a few plain arrays with a leading scenario axis; these integer constants
name their last axis. Numba folds module-level integers into compiled code as constants.
"""

# Station status codes (`istate[..., I_STATUS]`).
STARVED = 0
BUSY = 1
BLOCKED = 2
DOWN = 3
N_STATUS = 4
STATUS_NAMES = ("starved", "busy", "blocked", "down")

# Per-station parameters, `params[station, P_*]`, compiled from the spec by `twin.params`.
P_CYCLE = 0  # mean processing time at nominal speed, s
P_EXPO = 1  # 1.0 exponential processing, else 0.0 (the law is P_PROC_LAW)
P_FAIL = 2  # base failure rate while busy, 1/s (0: never fails)
P_MTTR = 3  # mean time to repair, s
P_THERMAL = 4  # 1.0 if the station has thermal dynamics
P_AMBIENT = 5  # ambient temperature, °C
P_TAU = 6  # thermal time constant, s
P_HEAT_PER_C = 7  # heater power per °C above ambient, kW/°C
P_IDEAL_LO = 8  # lower end of the scrap-free temperature window, °C
P_IDEAL_HI = 9  # upper end of the scrap-free temperature window, °C
P_SCRAP_BASE = 10  # scrap probability at nominal conditions
P_SCRAP_SPEED = 11  # added probability per (speed - nominal)² above nominal
P_SCRAP_TEMP = 12  # added probability per °C² outside the window
P_SCRAP_MAX = 13  # cap on the scrap probability
P_SPEED_NOM = 14  # nominal speed setpoint
P_IDLE_KW = 15  # power when not processing, kW
P_RUN_KW = 16  # power while processing at nominal speed, kW
P_ENERGY_EXP = 17  # running power exponent on speed / nominal
P_WEAR_EXP = 18  # wear accrual exponent on speed / nominal
P_WEAR_GAIN = 19  # failure rate multiplier per wear-hour
P_PROC_LAW = 20  # processing law: LAW_DETERMINISTIC, LAW_EXPONENTIAL, LAW_GAMMA, LAW_LOGNORMAL
P_PROC_SHAPE = 21  # gamma shape 1 / cv² (gamma), or lognormal sigma = sqrt(ln(1 + cv²))
P_FAIL_LAW = 22  # failure law: LAW_EXPONENTIAL or LAW_WEIBULL (busy time to failure)
P_FAIL_SHAPE = 23  # Weibull shape (beta)
P_FAIL_SCALE = 24  # Weibull scale eta = mtbf / Gamma(1 + 1 / beta), busy s
P_REPAIR_LAW = 25  # repair law: LAW_EXPONENTIAL or LAW_LOGNORMAL
P_REPAIR_SIGMA = 26  # lognormal sigma of repair times = sqrt(ln(1 + cv²))
N_PARAMS = 27

# Law codes of `P_PROC_LAW`, `P_FAIL_LAW` and `P_REPAIR_LAW`.
LAW_DETERMINISTIC = 0
LAW_EXPONENTIAL = 1
LAW_GAMMA = 2
LAW_LOGNORMAL = 3
LAW_WEIBULL = 4

# Per-station float state, `fstate[scenario, station, F_*]`.
F_TDONE = 0  # absolute completion time of the part in process, s (inf unless busy)
F_TFAIL = 1  # absolute time of the next failure, s (inf unless busy and unreliable)
F_TREPAIR = 2  # absolute time the repair ends, s (inf unless down)
F_LEFT = 3  # processing time left on the part held while down, s
F_LIFE = 4  # failure-hazard budget left before the next failure (Exp(1) units)
F_TBUSY = 5  # start of the current uninterrupted busy stretch, s
F_SINCE = 6  # time up to which status time and energy are accounted, s
F_WEAR = 7  # wear since the last repair, equivalent busy hours
F_TEMP = 8  # temperature at F_TREF, °C
F_TREF = 9  # reference time of F_TEMP, s
F_ENERGY = 10  # cumulative energy, electrical and heating, kWh
F_SPEED = 11  # speed setpoint in force
F_TSET = 12  # temperature setpoint in force, °C
F_RUN_KW = 13  # running power at the speed in force, kW
F_WEAR_RATE = 14  # wear-hours per busy hour at the speed in force
F_T0 = 15  # F_T0 + status: cumulative seconds spent in each status (4 columns)
F_AGE = F_T0 + N_STATUS  # busy seconds since the last repair (Weibull failures' age)
N_FSTATE = F_AGE + 1

# Per-station integer state, `istate[scenario, station, I_*]`.
I_STATUS = 0  # status code
I_DONE = 1  # parts finished by this station (good and scrapped)
I_SCRAP = 2  # parts scrapped at this station
I_FAILS = 3  # failures so far
N_ISTATE = 4

# Per-scenario line counters, `counts[scenario, C_*]`.
C_RELEASED = 0  # parts started at the first station
C_OUT = 1  # good parts that left the last station
C_SCRAP = 2  # parts scrapped anywhere
N_COUNTS = 3

# Random streams per station, `rng[scenario, station, R_*]` (splitmix64 states).
R_WORK = 0  # processing times and scrap draws
R_FAIL = 1  # failure lives and repair times
N_STREAMS = 2

# Setpoints, `setpoints[scenario, station, S_*]`, in the order of `twin.spec.SETPOINT_NAMES`.
S_SPEED = 0
S_TEMP = 1
N_SETPOINTS = 2
