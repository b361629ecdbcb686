"""Chinese place, road and building names for the demo district (invented, Nanshan-flavoured)."""

from __future__ import annotations

STREET_NAMES = ("粤海", "南山", "蛇口", "招商", "沙河", "南头", "桃源", "西丽")

COMMUNITY_NAMES = (
    "海珠",
    "海桂",
    "海滨",
    "桂庙",
    "南园",
    "向南",
    "北头",
    "荔林",
    "荔芳",
    "南光",
    "阳光",
    "登良",
    "后海",
    "科技园",
    "高新",
    "深圳湾",
    "蔚蓝",
    "学府",
    "文心",
    "海月",
    "东滨",
    "南油",
    "四海",
    "渔一",
    "湾厦",
    "花果山",
    "月亮湾",
    "赤湾",
    "水湾",
    "太子湾",
    "龙城",
    "铜鼓",
    "大冲",
    "麒麟",
    "白石洲",
    "沙河",
    "侨城",
    "西丽湖",
    "平山",
    "塘朗",
)

# Road names for the lattice lines; lines beyond the lists get numbered names.
NS_ROAD_NAMES = (
    "后海大道",
    "科苑大道",
    "中心路",
    "文心五路",
    "海德三道",
    "南海大道",
    "学府路东段",
    "深湾一路",
    "深湾二路",
    "沙河西路",
    "高新南九道",
    "科技南十路",
    "工业八路",
    "南山大道",
    "东滨北路",
    "桂庙北路",
)
EW_ROAD_NAMES = (
    "滨海大道",
    "海德一道",
    "海德二道",
    "登良路",
    "创业路",
    "东滨路",
    "学府路",
    "望海路",
    "兴华路",
    "海月路",
    "桂庙路",
    "南光路",
    "荔林路",
    "蔚蓝路",
    "海珠路",
    "滨河路",
)

ESTATE_WORDS = (
    "海岸",
    "蔚蓝",
    "滨海",
    "半岛",
    "荔湾",
    "学府",
    "科苑",
    "海德",
    "文心",
    "海月",
    "海珠",
    "桂庙",
    "南园",
    "深湾",
    "登良",
    "海阔",
    "天利",
    "汇景",
    "阳光",
    "海湾",
    "悦海",
    "星海",
    "湾畔",
    "云海",
    "御景",
    "碧海",
    "揽月",
    "听涛",
    "望海",
    "观澜",
)
ESTATE_SUFFIXES = ("花园", "家园", "名苑", "公馆", "雅居", "华庭", "新城", "豪园")
VILLAGE_NAMES = ("南山村", "向南村", "后海村", "北头村", "南园村", "桂庙新村", "渔一村", "沙河村", "大冲村", "湾厦村")
COMPANY_WORDS = ("创新", "科兴", "汇智", "云谷", "星河", "海岸", "智汇", "软件", "前沿", "深湾", "华兴", "天安")

CHINESE_DIGITS = "零一二三四五六七八九"


def chinese_number(n: int) -> str:
    """Chinese numeral for 1..999 (二, 十二, 二十, 一百零五), used to tell repeated names apart."""
    if not 0 < n < 1000:
        raise ValueError(f"chinese_number supports 1..999, got {n}")
    hundreds, rest = divmod(n, 100)
    tens, ones = divmod(rest, 10)
    out = ""
    if hundreds:
        out += CHINESE_DIGITS[hundreds] + "百"
        if rest and tens == 0:
            out += "零"
    if tens:
        out += ("" if tens == 1 and not hundreds else CHINESE_DIGITS[tens]) + "十"
    if ones:
        out += CHINESE_DIGITS[ones]
    return out


def cycled_name(words: tuple[str, ...], i: int) -> str:
    """The i-th name of a list; after the list runs out the names repeat with 二, 三, ... appended."""
    base = words[i % len(words)]
    round_ = i // len(words)
    return base if round_ == 0 else base + chinese_number(round_ + 1)


def road_name(names: tuple[str, ...], i: int, numbered_stem: str) -> str:
    """Name of lattice line i: from the list, then ``<stem><n>路`` for lines beyond it."""
    if i < len(names):
        return names[i]
    return f"{numbered_stem}{chinese_number(i - len(names) + 1)}路"
